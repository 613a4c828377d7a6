"""``medseg completion bash|zsh|fish``: a shell completion script, generated from the argument parser.

The script knows every sub-command, its options and the values of options with
fixed choices (``--device auto|cpu|cuda``); other values and positional arguments
complete as file names. It is generated from :func:`medseg.cli.build_parser`, so
new commands and options appear without editing anything here. Install it with::

    medseg completion bash > ~/.local/share/bash-completion/completions/medseg
    medseg completion zsh > "${fpath[1]}/_medseg"      # or any folder on $fpath
    medseg completion fish > ~/.config/fish/completions/medseg.fish
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")
HELP = "print a shell completion script (bash, zsh or fish) for medseg"

_SAFE_WORD = re.compile(r"^[A-Za-z0-9_.,/+:=-]+$")
_PATHLIKE = re.compile(r"file|dir|folder|path|output|model|pipeline", re.IGNORECASE)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "completion",
        help=HELP,
        description=HELP + ". Sub-commands, their options and the choices of options complete; "
        "file arguments complete as files. Load it for the current shell with "
        "`source <(medseg completion bash)` (bash, zsh) or `medseg completion fish | source`, or "
        "install it: `medseg completion bash > ~/.local/share/bash-completion/completions/medseg`, "
        "`medseg completion zsh > ~/.zfunc/_medseg` (with ~/.zfunc on $fpath), "
        "`medseg completion fish > ~/.config/fish/completions/medseg.fish`.",
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell to write the script for")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.cli import build_parser

    print(completion_script(build_parser(), args.shell), end="")
    return 0


@dataclass(frozen=True)
class Option:
    """One option of a command, as completion needs it."""

    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...] = ()
    path: bool = False  # its value is a file or folder


@dataclass(frozen=True)
class Command:
    """A command (or the program itself, named ``""``): its options and what its positionals take."""

    name: str
    help: str
    options: tuple[Option, ...]
    positional_choices: tuple[str, ...] = ()
    positional_files: bool = False


def describe(parser: argparse.ArgumentParser) -> tuple[Command, list[Command]]:
    """The program's own options and its sub-commands, read from the parser."""
    top = _command("", "", parser)
    commands = []
    for action in parser._actions:  # argparse has no public API for this
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                commands.append(_command(name, helps.get(name, ""), sub))
    return top, commands


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser``'s program for ``shell`` (``bash``, ``zsh`` or ``fish``).

    Raises:
        ValueError: an unknown shell.
    """
    writers = {"bash": _bash, "zsh": _zsh, "fish": _fish}
    if shell not in writers:
        raise ValueError(f"no completion for shell {shell!r}; choose from {', '.join(SHELLS)}")
    top, commands = describe(parser)
    return writers[shell](parser.prog, top, commands)


def _command(name: str, help_text: str, parser: argparse.ArgumentParser) -> Command:
    options, choices, files = [], (), False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        values = tuple(str(c) for c in action.choices) if action.choices else ()
        values = tuple(v for v in values if _SAFE_WORD.match(v))
        if action.option_strings:
            flags = tuple(f for f in action.option_strings if _SAFE_WORD.match(f))
            is_path = action.type is Path or bool(_PATHLIKE.search(f"{action.metavar or ''} {action.dest}"))
            options.append(Option(flags, _plain(action.help or ""), action.nargs != 0, values, is_path))
        elif values:
            choices = values
        else:
            files = True
    return Command(name, _plain(help_text), tuple(options), choices, files)


def _plain(text: str, limit: int = 70) -> str:
    """Help text safe inside any shell quoting: no quotes, brackets, colons or expansions; one short line."""
    text = re.sub(r"\s*\([^()]*\)", "", text)  # parenthetical remarks
    text = text.replace(": ", " - ").replace("'", "")
    text = re.sub(r"[\[\]:\"`$\\(){}]", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _function(prog: str) -> str:
    return "_" + re.sub(r"\W", "_", prog)


def _words(items) -> str:
    return " ".join(items)


# -- bash ------------------------------------------------------------------------------------


def _bash(prog: str, top: Command, commands: list[Command]) -> str:
    fn = _function(prog)
    names = [c.name for c in commands]
    lines = [
        f"# bash completion for {prog} (generated by `{prog} completion bash`)",
        f"{fn}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" cmd="" i',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "${COMP_WORDS[i]}" in',
        f'            {"|".join(names)}) cmd="${{COMP_WORDS[i]}}"; break ;;',
        "        esac",
        "    done",
        '    case "$cmd" in',
    ]
    for command in [top, *commands]:
        flags = _words(f for o in command.options for f in o.flags)
        lines.append(f'        "{command.name}")')
        valued = [o for o in command.options if o.takes_value]
        if valued:
            lines.append('            case "$prev" in')
            for option in valued:
                reply = f'COMPREPLY=($(compgen -W "{_words(option.choices)}" -- "$cur")); ' if option.choices else ""
                lines.append(f"                {'|'.join(option.flags)}) {reply}return ;;  # other values: file names")
            lines.append("            esac")
        lines.append(
            f'            if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "{flags}" -- "$cur")); return; fi'
        )
        if command is top:
            lines.append(f'            COMPREPLY=($(compgen -W "{_words(names)}" -- "$cur")) ;;')
        elif command.positional_choices:
            lines.append(f'            COMPREPLY=($(compgen -W "{_words(command.positional_choices)}" -- "$cur")) ;;')
        elif command.positional_files:
            lines.append("            ;;  # file names (complete -o default)")
        else:
            lines.append("            compopt +o default 2>/dev/null ;;  # no arguments")
    lines += ["    esac", "}", f"complete -o default -F {fn} {prog}", ""]
    return "\n".join(lines)


# -- zsh -------------------------------------------------------------------------------------


def _zsh_specs(command: Command) -> list[str]:
    specs = []
    for option in command.options:
        for flag in option.flags:
            spec = f"{flag}[{option.help}]"
            if option.takes_value:
                if option.choices:
                    spec += f":value:({_words(option.choices)})"
                else:
                    spec += ":path:_files" if option.path else ":value: "
            specs.append(f"'{spec}'")
    if command.positional_choices:
        specs.append(f"'1:{command.name or 'argument'}:({_words(command.positional_choices)})'")
    elif command.positional_files:
        specs.append("'*:file:_files'")
    return specs


def _zsh(prog: str, top: Command, commands: list[Command]) -> str:
    fn = _function(prog)
    joiner = " \\\n            "
    lines = [
        f"#compdef {prog}",
        f"# zsh completion for {prog} (generated by `{prog} completion zsh`)",
        "",
        f"{fn}() {{",
        '    local curcontext="$curcontext" state line',
        "    typeset -A opt_args",
        f"    _arguments -C{joiner}"
        + joiner.join([*_zsh_specs(top), "'1:command:->command'", "'*::argument:->argument'"])
        + " && return",
        "    case $state in",
        "        command)",
        "            local -a commands",
        "            commands=(",
        *[f"                '{c.name}:{c.help}'" for c in commands],
        "            )",
        f"            _describe -t commands '{prog} command' commands ;;",
        "        argument)",
        f'            curcontext="${{curcontext%:*:*}}:{prog}-$line[1]:"',
        "            case $line[1] in",
    ]
    for command in commands:
        specs = _zsh_specs(command)
        lines.append(f"                {command.name}) _arguments{joiner}    " + (joiner + "    ").join(specs) + " ;;")
    lines += [
        "            esac ;;",
        "    esac",
        "}",
        "",
        "if [[ $zsh_eval_context[-1] == loadautofunc ]]; then",
        f'    {fn} "$@"',
        "else",
        f"    compdef {fn} {prog}",
        "fi",
        "",
    ]
    return "\n".join(lines)


# -- fish ------------------------------------------------------------------------------------


def _fish_flags(option: Option) -> str:
    parts = []
    for flag in option.flags:
        if flag.startswith("--"):
            parts.append(f"-l {flag[2:]}")
        elif len(flag) == 2:
            parts.append(f"-s {flag[1]}")
        else:
            parts.append(f"-o {flag[1:]}")
    return " ".join(parts)


def _fish(prog: str, top: Command, commands: list[Command]) -> str:
    base = f"complete -c {prog}"
    lines = [
        f"# fish completion for {prog} (generated by `{prog} completion fish`)",
        f"{base} -f",
    ]
    for command in [top, *commands]:
        condition = "__fish_use_subcommand" if command is top else f"'__fish_seen_subcommand_from {command.name}'"
        for option in command.options:
            value = ""
            if option.takes_value:
                value = f" -x -a '{_words(option.choices)}'" if option.choices else " -r -F" if option.path else " -x"
            lines.append(f"{base} -n {condition} {_fish_flags(option)}{value} -d '{option.help}'")
        if command is top:
            for sub in commands:
                lines.append(f"{base} -n '__fish_use_subcommand' -a {sub.name} -d '{sub.help}'")
        elif command.positional_choices:
            lines.append(f"{base} -n {condition} -x -a '{_words(command.positional_choices)}'")
        elif command.positional_files:
            lines.append(f"{base} -n {condition} -F")
    return "\n".join(lines) + "\n"
