"""Finding cases in predict's inputs: names, multi-channel grouping, shards, exclusions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError, InputError
from medseg.inference.inputs import (
    collect_cases,
    parse_shard,
    select_shard,
    shard_from_environment,
    split_channel,
)
from medseg.io import write_image
from medseg.volume import Volume
from tests import factories


def _nifti(path: Path) -> Path:
    write_image(Volume(np.zeros((4, 3, 2), np.int16), factories.axial_geometry((4, 3, 2))), path)
    return path


def _series(folder: Path, number: int, description: str) -> None:
    image, _ = factories.phantom_pair(factories.axial_geometry((8, 6, 4)))
    names = [f"s{number}_{k}.dcm" for k in range(image.spatial_shape[2])]
    factories.write_series(image, folder, series_number=number, series_description=description, file_names=names)


def test_image_files_are_named_after_their_case_without_the_channel_suffix(tmp_path):
    _nifti(tmp_path / "in" / "liver_007_0000.nii.gz")
    _nifti(tmp_path / "in" / "plain.nii.gz")
    found = collect_cases([tmp_path / "in"])
    assert sorted(c.name for c in found.cases) == ["liver_007", "plain"]
    assert not any(c.is_dicom for c in found.cases)


def test_multi_channel_cases_group_their_channel_files_in_order(tmp_path):
    for channel in (1, 0):
        _nifti(tmp_path / f"brain_0{channel:03d}.nii.gz")
    (case,) = collect_cases([tmp_path], channels=2).cases
    assert case.name == "brain"
    assert [Path(f).name for f in case.files] == ["brain_0000.nii.gz", "brain_0001.nii.gz"]


def test_a_missing_channel_file_is_named(tmp_path):
    _nifti(tmp_path / "brain_0000.nii.gz")
    with pytest.raises(InputError, match=r"brain.*_0001 missing"):
        collect_cases([tmp_path], channels=2)


def test_dicom_series_take_their_folder_name_plus_number_when_they_share_it(tmp_path):
    _series(tmp_path / "study" / "CT_abdomen", 3, "abdomen")
    _series(tmp_path / "study" / "mixed", 4, "arterial")
    _series(tmp_path / "study" / "mixed", 5, "venous")
    (tmp_path / "study" / "notes.txt").write_text("not DICOM")
    found = collect_cases([tmp_path / "study"])
    assert [c.name for c in found.cases] == ["CT_abdomen", "mixed_4_arterial", "mixed_5_venous"]
    assert all(c.is_dicom and c.series_uid for c in found.cases)
    assert [Path(p).name for p, _ in found.skipped_files] == ["notes.txt"]


def test_clashing_names_get_a_hash_and_nothing_escapes_the_folder(tmp_path):
    _series(tmp_path / "a" / "CT", 1, "x")
    _series(tmp_path / "b" / "CT", 1, "x")
    _series(tmp_path / "c", 2, "../../etc")
    _series(tmp_path / "c", 3, "/root")
    names = [c.name for c in collect_cases([tmp_path]).cases]
    assert len(set(names)) == 4
    assert sum(n.startswith("CT_") for n in names) == 2
    assert any(n.startswith("c_2_") for n in names) and any(n.startswith("c_3_") for n in names)
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_the_output_folder_inside_an_input_is_not_read_again(tmp_path):
    _nifti(tmp_path / "case.nii.gz")
    _nifti(tmp_path / "out" / "case.nii.gz")
    found = collect_cases([tmp_path], exclude=tmp_path / "out")
    assert [Path(c.files[0]).parent for c in found.cases] == [tmp_path]


def test_shards_partition_the_cases_deterministically(tmp_path):
    for n in range(7):
        _nifti(tmp_path / f"c{n}.nii.gz")
    cases = collect_cases([tmp_path]).cases
    shards = [select_shard(cases, (i, 3)) for i in (1, 2, 3)]
    names = sorted(c.name for shard in shards for c in shard)
    assert names == sorted(c.name for c in cases)
    assert [len(s) for s in shards] == [3, 2, 2]
    assert [c.name for c in select_shard(collect_cases([tmp_path]).cases, (2, 3))] == [c.name for c in shards[1]]


@pytest.mark.parametrize("text", ["0/4", "5/4", "1-4", "a/b"])
def test_bad_shards_are_refused(text):
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)


def test_slurm_arrays_give_the_shard_from_zero_or_one_based_ids():
    assert shard_from_environment({}) is None
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}) == (1, 4)
    env = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert shard_from_environment(env) == (4, 4)
    with pytest.raises(ConfigError, match="outside"):
        shard_from_environment({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"})


def test_split_channel():
    assert split_channel("case_12_0003") == ("case_12", 3)
    assert split_channel("case_12") == ("case_12", None)
