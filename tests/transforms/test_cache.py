"""CaseCache: prepared once, memory-mapped afterwards, keyed by the preprocessing, never half-written."""

from __future__ import annotations

import dataclasses
import functools
import pickle

import numpy as np
import pytest

from medseg.datasets import load_case, open_dataset
from medseg.synthetic import write_phantom_dataset
from medseg.transforms import CaseCache, cache_key, file_stamp, prepare_case
from tests.transforms.helpers import make_pipeline


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = write_phantom_dataset(tmp_path_factory.mktemp("data") / "Dataset001_Phantom", num_training=3)
    return open_dataset(folder)


class CountingLoader:
    def __init__(self, dataset, case):
        self.dataset, self.case, self.calls = dataset, case, 0

    def __call__(self):
        self.calls += 1
        return load_case(self.dataset, self.case)


def test_miss_then_hit(dataset, tmp_path):
    pipeline = make_pipeline()
    cache = CaseCache(tmp_path, pipeline)
    case = dataset.cases[0]
    load = CountingLoader(dataset, case)
    first = cache.get(case.case_id, load)
    second = cache.get(case.case_id, load)
    assert load.calls == 1
    assert isinstance(second.image, np.memmap) and isinstance(second.label, np.memmap)
    assert not second.image.flags.writeable
    image, label = load_case(dataset, case)
    fresh = prepare_case(image, label, pipeline, case_id=case.case_id)
    for got in (first, second):
        np.testing.assert_array_equal(got.image, fresh.image)
        np.testing.assert_array_equal(got.label, fresh.label)
        assert got.geometry == fresh.geometry and got.source_geometry == image.geometry
        assert sorted(got.class_locations) == sorted(fresh.class_locations)
        for value, where in fresh.class_locations.items():
            np.testing.assert_array_equal(got.class_locations[value], where)
    assert cache.folder.parent == tmp_path and (cache.folder / "preprocessing.json").is_file()


def test_another_spacing_uses_another_folder(dataset, tmp_path):
    case = dataset.cases[0]
    load = CountingLoader(dataset, case)
    first = CaseCache(tmp_path, make_pipeline(spacing=(3.0, 3.0, 4.0)))
    second = CaseCache(tmp_path, make_pipeline(spacing=(2.0, 3.0, 4.0)))
    assert first.folder != second.folder
    assert first.get(case.case_id, load).image.shape != second.get(case.case_id, load).image.shape
    assert load.calls == 2
    # settings outside preprocessing do not matter; the network's dimensions do
    assert cache_key(make_pipeline(batch_size=7)) == cache_key(make_pipeline())
    assert cache_key(make_pipeline(dimensions=2, patch=(32, 32))) != cache_key(make_pipeline())
    assert cache_key(make_pipeline(crop_to_nonzero=True)) != cache_key(make_pipeline())


def test_a_changed_stamp_prepares_again(dataset, tmp_path):
    case = dataset.cases[1]
    load = CountingLoader(dataset, case)
    cache = CaseCache(tmp_path, make_pipeline())
    stamp = file_stamp([*case.images, case.label])
    cache.get(case.case_id, load, stamp=stamp)
    cache.get(case.case_id, load, stamp=stamp)
    assert load.calls == 1
    cache.get(case.case_id, load, stamp="edited")
    assert load.calls == 2


def test_a_failed_write_leaves_nothing_behind(dataset, tmp_path, monkeypatch):
    cache = CaseCache(tmp_path, make_pipeline())
    case = dataset.cases[0]
    real_save = np.save
    calls = []

    def dying_save(file, array, **kwargs):
        calls.append(array.shape)
        if len(calls) == 3:  # image and locations are in place; the label dies half-written
            file.write(b"\x93NUMPY partial")
            raise KeyboardInterrupt("killed")
        real_save(file, array, **kwargs)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        cache.get(case.case_id, functools.partial(load_case, dataset, case))
    monkeypatch.setattr(np, "save", real_save)
    assert len(calls) == 3
    assert sorted(p.name for p in cache.folder.iterdir()) == ["preprocessing.json"]
    assert not cache.contains(case.case_id)
    load = CountingLoader(dataset, case)
    assert cache.get(case.case_id, load).label is not None and load.calls == 1


def test_a_case_without_its_meta_file_counts_as_missing(dataset, tmp_path):
    cache = CaseCache(tmp_path, make_pipeline())
    case = dataset.cases[0]
    load = CountingLoader(dataset, case)
    cache.get(case.case_id, load)
    cache.paths(case.case_id)["meta"].unlink()
    cache.get(case.case_id, load)
    assert load.calls == 2


def test_2d_cases_are_stored_slice_by_slice_but_read_as_ijk(dataset, tmp_path):
    pipeline = make_pipeline(dimensions=2, patch=(32, 32))
    cache = CaseCache(tmp_path, pipeline)
    case = dataset.cases[2]
    prepared = cache.get(case.case_id, functools.partial(load_case, dataset, case))
    fresh = prepare_case(*load_case(dataset, case), pipeline, case_id=case.case_id)
    np.testing.assert_array_equal(prepared.image, fresh.image)
    assert prepared.image[..., 3].flags.c_contiguous  # one slice is one contiguous block on disk


def test_cached_cases_pickle_as_file_names(dataset, tmp_path):
    for pipeline in (make_pipeline(), make_pipeline(dimensions=2, patch=(32, 32))):
        cache = CaseCache(tmp_path, pipeline)
        case = dataset.cases[0]
        prepared = cache.get(case.case_id, functools.partial(load_case, dataset, case))
        data = pickle.dumps(prepared)
        assert len(pickle.dumps(dataclasses.replace(prepared, class_locations=None))) < 2000
        again = pickle.loads(data)
        assert isinstance(again.image, np.memmap)
        np.testing.assert_array_equal(again.image, prepared.image)
        np.testing.assert_array_equal(again.label, prepared.label)
        assert again.geometry == prepared.geometry and again.class_locations.keys() == prepared.class_locations.keys()


def test_prepare_all_fills_the_cache_and_reports_progress(dataset, tmp_path):
    cache = CaseCache(tmp_path, make_pipeline())
    seen = []
    cases = [(c.case_id, functools.partial(load_case, dataset, c)) for c in dataset.cases]
    cache.prepare_all(cases, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert all(cache.contains(case_id) for case_id, _ in cases)
    seen.clear()
    cache.prepare_all(cases, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 3)]


def test_unusual_case_ids_get_safe_distinct_file_names(tmp_path):
    cache = CaseCache(tmp_path, make_pipeline())
    names = {cache.paths(case_id)["image"].name for case_id in ("a/b", "a_b", "a:b", "../x")}
    assert len(names) == 4 and all("/" not in name and not name.startswith(".") for name in names)


def test_prepare_all_in_worker_processes(dataset, tmp_path):
    cache = CaseCache(tmp_path, make_pipeline())
    cases = [(c.case_id, functools.partial(load_case, dataset, c)) for c in dataset.cases]
    cache.prepare_all(cases, workers=2)
    load = CountingLoader(dataset, dataset.cases[1])
    prepared = cache.get(dataset.cases[1].case_id, load)
    assert load.calls == 0
    fresh = prepare_case(*load_case(dataset, dataset.cases[1]), make_pipeline(), case_id=prepared.case_id)
    np.testing.assert_array_equal(prepared.image, fresh.image)
