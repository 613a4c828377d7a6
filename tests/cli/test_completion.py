"""``medseg completion``: scripts for bash, zsh and fish, generated from the real parser."""

from __future__ import annotations

import argparse
import shutil
import subprocess

import pytest

from medseg.cli import build_parser, main
from medseg.cli.completion import SHELLS, completion_script, describe


def _long_options(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Command -> its long options, straight from argparse."""
    top, commands = describe(parser)
    return {c.name: [f for o in c.options for f in o.flags if f.startswith("--")] for c in commands}


@pytest.mark.parametrize("shell", SHELLS)
def test_the_script_names_every_command_and_option(shell, capsys):
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    parser = build_parser()
    options = _long_options(parser)
    assert {"info", "predict", "demo", "doctor", "completion"} <= set(options)
    for command, flags in options.items():
        assert command in script
        for flag in flags:
            assert (flag if shell != "fish" else f"-l {flag[2:]}") in script, f"{shell}: {command} {flag}"
    assert completion_script(parser, shell) == script


def _bash_complete(script: str, *words: str) -> list[str]:
    """What bash's completion function offers for ``words`` (the last one being completed)."""
    program = (
        script
        + "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + ")\n"
        + f"COMP_CWORD={len(words) - 1}\nCOMPREPLY=()\n_medseg\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    )
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30, check=True)
    return [line for line in result.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_options_and_choices():
    script = completion_script(build_parser(), "bash")
    assert _bash_complete(script, "medseg", "pre") == ["predict"]
    assert "demo" in _bash_complete(script, "medseg", "")
    assert _bash_complete(script, "medseg", "predict", "--dev") == ["--device"]
    assert _bash_complete(script, "medseg", "-v", "predict", "--device", "c") == ["cpu", "cuda"]
    assert _bash_complete(script, "medseg", "completion", "") == ["bash", "zsh", "fish"]
    assert "--json" in _bash_complete(script, "medseg", "doctor", "--")
    assert _bash_complete(script, "medseg", "predict", "scans/") == []  # left to bash's file-name completion


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_commands_options_and_choices(tmp_path):
    path = tmp_path / "medseg.fish"
    path.write_text(completion_script(build_parser(), "fish"))

    def complete(line: str) -> list[str]:
        result = subprocess.run(["fish", "--no-config", "-c", f"source {path}; complete -C '{line}'"],
                                capture_output=True, text=True, timeout=30, check=True)
        return [row.split("\t")[0] for row in result.stdout.splitlines()]

    assert complete("medseg pre") == ["predict"]
    assert complete("medseg predict --dev") == ["--device"]
    assert complete("medseg predict --device ") == ["auto", "cpu", "cuda"]
    assert sorted(complete("medseg completion ")) == ["bash", "fish", "zsh"]
    assert "--json" in complete("medseg doctor --")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_parses_the_script_and_registers_the_function(tmp_path):
    path = tmp_path / "_medseg"
    path.write_text(completion_script(build_parser(), "zsh"))
    assert subprocess.run(["zsh", "-n", str(path)], capture_output=True, timeout=30).returncode == 0
    program = f"autoload -U compinit; compinit -u -d {tmp_path / 'dump'}; source {path}; print -r -- $_comps[medseg]"
    result = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "_medseg", result.stderr


def test_an_unknown_shell_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["completion", "tcsh"])
    assert exit_.value.code == 2
