"""Streaming statistics: one pass, mergeable, equal to numpy on the same data."""

from __future__ import annotations

import numpy as np
import pytest

from astroingest.cubes import Stats


def test_one_batch_matches_numpy() -> None:
    data = np.random.default_rng(1).normal(3, 2, size=(50, 7)).astype("float32")
    data[3, 3] = np.nan
    stats = Stats.of(data)
    finite = data[np.isfinite(data)].astype("float64")
    assert stats.count == finite.size and stats.nan_count == 1
    assert stats.mean == pytest.approx(finite.mean(), rel=1e-12)
    assert stats.std == pytest.approx(finite.std(), rel=1e-12)
    assert (stats.min, stats.max) == (finite.min(), finite.max())


@pytest.mark.parametrize("cuts", [(1,), (10, 11, 400), (250, 251)])
def test_merged_batches_equal_the_whole(cuts: tuple[int, ...]) -> None:
    data = np.random.default_rng(2).gamma(2.0, 3.0, size=500)
    merged = Stats()
    for part in np.split(data, cuts):
        merged = merged.merge(Stats.of(part))
    whole = Stats.of(data)
    assert merged.count == whole.count
    assert merged.mean == pytest.approx(whole.mean, rel=1e-12)
    assert merged.std == pytest.approx(whole.std, rel=1e-10)
    assert (merged.min, merged.max) == (whole.min, whole.max)


def test_all_nan_and_round_trip_through_json() -> None:
    empty = Stats.of(np.array([np.nan, np.nan]))
    assert empty.count == 0 and empty.nan_count == 2
    assert empty.as_dict()["min"] is None
    assert Stats.from_dict(empty.as_dict()) == empty
    some = Stats.of(np.arange(5.0))
    assert Stats.from_dict(some.as_dict()) == some
