"""manifest.csv and run.json: merged per case under a lock, so shards can share an output folder."""

from __future__ import annotations

import csv
import json
import multiprocessing

from medseg.inference.records import files_sha256, read_manifest, record_case, record_run


def _row(name: str, status: str = "done") -> dict:
    return {"case": name, "input": f"/in/{name}", "status": status, "outputs": [f"/out/{name}.nii.gz"], "seconds": 1.5}


def test_rows_merge_by_case_and_the_latest_wins(tmp_path):
    record_case(tmp_path, _row("b", "failed"), {"status": "failed"})
    record_case(tmp_path, _row("a"), {"status": "done"})
    record_case(tmp_path, _row("b"), {"status": "done"})
    rows = read_manifest(tmp_path)
    assert list(rows) == ["a", "b"] and rows["b"]["status"] == "done"
    assert rows["a"]["outputs"] == "/out/a.nii.gz" and rows["a"]["seconds"] == "1.50"
    with open(tmp_path / "manifest.csv", newline="") as handle:
        assert next(csv.reader(handle))[:4] == ["case", "input", "series_uid", "status"]
    assert json.loads((tmp_path / "run.json").read_text())["cases"]["b"] == {"status": "done"}


def _shard(args: tuple) -> None:
    folder, shard = args
    for n in range(15):
        record_case(folder, _row(f"s{shard}_{n}"), {"shard": shard})


def test_concurrent_shards_lose_no_row(tmp_path):
    with multiprocessing.get_context("fork").Pool(3) as pool:
        pool.map(_shard, [(tmp_path, s) for s in range(3)])
    assert len(read_manifest(tmp_path)) == 45
    assert len(json.loads((tmp_path / "run.json").read_text())["cases"]) == 45


def test_sessions_accumulate_and_facts_update(tmp_path):
    record_run(tmp_path, {"device": "cpu", "session": {"shard": "1/2"}}, key="one")
    record_run(tmp_path, {"device": "cuda", "session": {"shard": "2/2"}}, key="two")
    record_run(tmp_path, {"device": "cuda", "session": {"shard": "2/2", "done": 3}}, key="two")
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["device"] == "cuda"
    assert [s["key"] for s in run["sessions"]] == ["one", "two"] and run["sessions"][1]["done"] == 3


def test_files_hash_covers_content_and_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 10)
    b.write_bytes(b"y" * 10)
    assert files_sha256([a, b]) != files_sha256([b, a])
    assert files_sha256([a, b]) == files_sha256([a, b])


def test_batch_flags_are_recomputed_over_every_done_case(tmp_path):
    from medseg.inference.quality import batch_flags
    from medseg.inference.records import format_volumes, parse_volumes, record_batch_flags

    for n in range(6):  # two shards' worth of cases, one of them far off
        liver = 3000.0 if n == 5 else 1500.0 + 10 * n
        row = {**_row(f"c{n}"), "volumes_ml": format_volumes({"liver": liver, "spleen": 200.0})}
        record_case(tmp_path, row, {"quality": {"flags": [], "batch_flags": ["stale"]}})
    record_case(tmp_path, {**_row("broken", "failed"), "volumes_ml": ""}, {"status": "failed"})

    flagged = record_batch_flags(tmp_path, batch_flags)

    assert flagged == {"c5": ["liver: 3000 mL, far above this batch (median 1525 mL)"]}
    rows = read_manifest(tmp_path)
    assert rows["c5"]["batch_flags"] == "liver: 3000 mL, far above this batch (median 1525 mL)"
    assert all(rows[f"c{n}"]["batch_flags"] == "" for n in range(5)) and rows["broken"]["batch_flags"] == ""
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["cases"]["c0"]["quality"]["batch_flags"] == [] and run["cases"]["c5"]["quality"]["batch_flags"]
    assert parse_volumes("liver=1.5;bad;spleen=x;kidney=2") == {"liver": 1.5, "kidney": 2.0}
