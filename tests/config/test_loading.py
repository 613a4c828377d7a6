"""Pipeline YAML: the shipped files validate; errors name the key and its line; dumping round-trips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medseg.config import dump_pipeline, load_pipeline, parse_pipeline, save_pipeline
from medseg.errors import ConfigError

PIPELINES = sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml"))
CT = (Path(__file__).resolve().parents[2] / "pipelines" / "ct-3d.yaml").read_text()


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_shipped_pipelines_validate_and_round_trip(path, tmp_path):
    pipeline = load_pipeline(path)
    save_pipeline(pipeline, tmp_path / "p.yaml", comments={"training.patch_size": "why this size"}, header="hello")
    text = (tmp_path / "p.yaml").read_text()
    assert text.startswith("# hello") and "  # why this size\n  patch_size:" in text
    assert load_pipeline(tmp_path / "p.yaml") == pipeline


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_unknown_key_names_line_and_suggests():
    text = CT.replace("  epochs: 300", "  epoch: 300")
    with pytest.raises(ConfigError) as error:
        parse_pipeline(text, source="my.yaml")
    assert f"my.yaml:{_line_of(text, 'epoch: 300')}: training.epoch: unknown key (did you mean 'epochs'?)" in str(error.value)


def test_bad_value_names_line_key_and_value():
    text = CT.replace("learning_rate: 0.01", "learning_rate: -0.5")
    with pytest.raises(ConfigError) as error:
        parse_pipeline(text, source="my.yaml")
    message = str(error.value)
    assert f"my.yaml:{_line_of(text, 'learning_rate')}: training.optimizer.learning_rate" in message
    assert "greater than 0" in message and "-0.5" in message


def test_several_problems_are_listed_together():
    text = CT.replace("dimensions: 3", "dimensions: 4").replace("overlap: 0.5", "overlap: 1.5")
    with pytest.raises(ConfigError) as error:
        parse_pipeline(text)
    message = str(error.value)
    assert "network.dimensions" in message and "inference.overlap" in message


@pytest.mark.parametrize(
    "change, expected",
    [
        (("patch_size: [128, 128, 64]", "patch_size: [128, 128]"), "patch_size has 2 numbers"),
        (("strides: [[1, 1, 1],", "strides: [[2, 2, 2],"), "first level's strides"),
        (("mirror_axes: [0, 1, 2]", "mirror_axes: [0, 1, 2]\n  batch_size: 0"), "inference.batch_size"),
        (("clip: [-160.0, 240.0], ", ""), "needs clip, mean and std"),
        (("name: ct-3d\n", ""), "name: required key is missing"),
    ],
)
def test_cross_field_rules(change, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_pipeline(CT.replace(*change))


def test_yaml_syntax_error_has_a_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nlabels: {1: liver\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_pipeline(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_pipeline(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        parse_pipeline("- 1\n- 2\n")


def test_short_label_form_equals_long_form():
    long = CT.replace("labels: {1: liver, 2: spleen, 3: kidney}", "labels:\n  1: {name: liver}\n  2: {name: spleen}\n  3: {name: kidney}")
    assert parse_pipeline(long) == parse_pipeline(CT)
    assert "1: {name: liver}" in dump_pipeline(parse_pipeline(CT))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_comments_read_back_are_written_again_in_their_places(path):
    from medseg.config.loading import read_comments

    text = path.read_text()
    header, comments = read_comments(text)
    assert header and text.startswith("# " + header.splitlines()[0])
    assert "preprocessing.orientation" in comments and "one voxel order" in comments["preprocessing.orientation"]
    again = dump_pipeline(parse_pipeline(text), comments=comments, header=header)
    assert parse_pipeline(again) == parse_pipeline(text)
    header_again, comments_again = read_comments(again)
    assert header_again == header
    # every comment comes back in its place but those above the items of a list (the dump writes none there)
    assert comments_again == {k: v for k, v in comments.items() if not re.search(r"\.\d+$", k) or k.startswith("labels.")}
