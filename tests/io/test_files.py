"""Atomic writes and safe file names."""

from __future__ import annotations

import os
import stat

import pytest

from medseg.io.files import atomic_path, safe_name, write_atomically


class WriterFailed(Exception):
    pass


def test_success_moves_the_file_into_place_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "out" / "scan.nii.gz"  # the folder is created
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(".scan.nii.gz.") and tmp.name.endswith(".nii.gz")
        assert not target.exists()
        tmp.write_bytes(b"voxels")
    assert target.read_bytes() == b"voxels"
    assert os.listdir(target.parent) == ["scan.nii.gz"]


def test_a_failing_writer_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "mask.nrrd"
    with pytest.raises(WriterFailed):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a fi")
            raise WriterFailed
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_a_failing_writer_keeps_the_previous_file(tmp_path):
    target = tmp_path / "mask.nrrd"
    target.write_bytes(b"old and good")

    def write(tmp):
        tmp.write_bytes(b"new and broken")
        raise WriterFailed

    with pytest.raises(WriterFailed):
        write_atomically(target, write)
    assert target.read_bytes() == b"old and good"
    assert os.listdir(tmp_path) == ["mask.nrrd"]


def test_write_atomically_replaces_and_returns_the_path(tmp_path):
    target = tmp_path / "labels.mha"
    target.write_bytes(b"old")
    assert write_atomically(str(target), lambda tmp: tmp.write_bytes(b"new")) == target
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["labels.mha"]


def test_a_name_without_extension_gets_a_temporary_suffix(tmp_path):
    with atomic_path(tmp_path / "README") as tmp:
        assert tmp.suffix == ".tmp"
        tmp.write_text("x")
    assert (tmp_path / "README").read_text() == "x"


def test_written_files_get_the_permissions_of_any_new_file(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomically(tmp_path / "a.nii", lambda tmp: tmp.write_bytes(b"x"))
        with open(tmp_path / "b.nii", "wb") as plain:
            plain.write(b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "a.nii").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.nii").st_mode) == 0o644


def test_temporary_names_do_not_collide(tmp_path):
    with atomic_path(tmp_path / "x.nii") as first, atomic_path(tmp_path / "x.nii") as second:
        assert first != second
        assert first.exists() and second.exists()
        first.write_text("1")
        second.write_text("2")
    assert (tmp_path / "x.nii").read_text() == "1"  # the outer context finishes last
    assert os.listdir(tmp_path) == ["x.nii"]


# -- safe_name ----------------------------------------------------------------------------


JUNK = [
    "../../etc/passwd",
    "",
    "\x00",
    "Tórax/ÄP",
    "..",
    ".hidden",
    "a/../../b",
    "C:\\Windows\\system32",
    "  spaced  out  ",
    "...",
    "-._-",
    "x" * 500,
    "名前",
    "a\nb\tc\rd",
    "series*?<>|:\"'",
]


@pytest.mark.parametrize("text", JUNK, ids=range(len(JUNK)))
def test_safe_name_can_never_leave_its_folder(text, tmp_path):
    name = safe_name(text)
    assert name
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert ".." not in name
    assert not name.startswith((".", "-"))
    assert len(name) <= 80
    assert name.isascii() and name.isprintable()
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


@pytest.mark.parametrize(
    "parts, expected",
    [
        (("../../etc/passwd",), "etc_passwd"),
        (("",), "unnamed"),
        (("\x00",), "unnamed"),
        (("Tórax/ÄP",), "Torax_AP"),
        (("CT", 3, "Abdomen 3.0 mm"), "CT_3_Abdomen_3.0_mm"),
        (("CT", None, "", "Head"), "CT_Head"),
        (("a...b",), "a.b"),
        ((0,), "0"),
    ],
)
def test_safe_name_keeps_what_it_can(parts, expected):
    assert safe_name(*parts) == expected


def test_safe_name_respects_max_length_without_trailing_punctuation():
    assert safe_name("abc_def", max_length=4) == "abc"
    assert len(safe_name("y" * 300)) == 80
    assert safe_name("y" * 300, max_length=10) == "y" * 10
