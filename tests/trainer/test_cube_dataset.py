"""ZarrCubeDataset on a real local cube, with real DataLoader workers and a real gloo group.

"Identical global order" means here: for every layout of ranks x workers, each reader
(rank, worker stream) serves whole blocks, and merging the readers' block sequences
round-robin (``interleave``, by consumer index ``stream * world_size + rank``) gives the
same list, ``global_order(blocks, seed, epoch)``. Within one rank, the DataLoader hands
out the streams' batches in strict rotation (0, 1, 0, 1…).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
import zarr

from astroingest.cubes import CubeLocation, read_manifest
from astroingest_trainer._cache import CacheSettings
from astroingest_trainer._cube_dataset import ZarrCubeDataset
from astroingest_trainer._loader import StreamLoader
from astroingest_trainer._sharding import consumer_index, global_order, interleave
from astroingest_trainer._stream import PROGRESS, StateMismatch
from tests.s3server import free_port
from tests.trainer.conftest import make_cube

SEED = 5
BATCH = 3  # does not divide the 4-sample blocks: batches straddle blocks
Items = list[dict[str, Any]]


def collect(url: str, workers: int, **options: Any) -> Items:
    """Every item of one epoch as (stream, samples, rows read), in the order received."""
    dataset = ZarrCubeDataset(
        url, ["index"], batch_size=BATCH, seed=SEED, normalize=False, **options
    )
    return [
        summary(item)
        for item in StreamLoader(dataset, num_workers=workers, start_method="forkserver")
    ]


def summary(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "stream": item[PROGRESS].stream,
        "samples": item["sample"].tolist(),
        "rows": item["index"][:, 0, 0, 0].int().tolist(),
    }


def _rank(rank: int, world: int, url: str, port: int, out: Path) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        found = {workers: collect(url, workers) for workers in (0, 1, 2)}
        (out / f"rank{rank}.json").write_text(json.dumps(found))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def layouts(
    cube_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[int, int], list[Items]]:
    """(world size, workers) -> each rank's items: one process, then two with gloo."""
    found: dict[tuple[int, int], list[Items]] = {(1, w): [collect(cube_url, w)] for w in (0, 1, 2)}
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank, args=(2, cube_url, free_port(), out), nprocs=2, join=True)
    for rank in (0, 1):
        for workers, items in json.loads((out / f"rank{rank}.json").read_text()).items():
            found.setdefault((2, int(workers)), []).append(items)
    return found


def test_every_layout_serves_every_sample_once(layouts: dict[tuple[int, int], list[Items]]) -> None:
    assert set(layouts) == set(itertools.product((1, 2), (0, 1, 2)))
    for layout, ranks in layouts.items():
        samples = [s for items in ranks for item in items for s in item["samples"]]
        assert sorted(samples) == list(range(48)), layout
        for item in (i for items in ranks for i in items):
            assert item["rows"] == item["samples"]  # the rows read are the samples named


def test_every_layout_serves_the_same_global_order(
    layouts: dict[tuple[int, int], list[Items]], cube_url: str
) -> None:
    dataset = ZarrCubeDataset(cube_url, ["index"], seed=SEED)
    expected = global_order(dataset.blocks, SEED, 0).tolist()
    block_of = dataset.blocks.block_of()
    for (world, workers), ranks in layouts.items():
        readers: dict[int, list[list[int]]] = {}
        for rank, items in enumerate(ranks):
            for stream in range(max(1, workers)):
                served = [s for i in items if i["stream"] == stream for s in i["samples"]]
                runs = [list(g) for _, g in itertools.groupby(served, key=block_of.__getitem__)]
                readers[consumer_index(rank, world, stream)] = runs
        assert interleave([readers[c] for c in sorted(readers)]) == expected, (world, workers)


def test_a_rank_takes_batches_from_its_workers_in_turn(
    layouts: dict[tuple[int, int], list[Items]],
) -> None:
    for world in (1, 2):
        for items in layouts[(world, 2)]:
            assert [i["stream"] for i in items] == [n % 2 for n in range(len(items))]


def test_resume_mid_epoch_serves_exactly_the_remaining_samples(
    layouts: dict[tuple[int, int], list[Items]], cube_url: str
) -> None:
    [uninterrupted] = layouts[(1, 2)]
    first = ZarrCubeDataset(cube_url, ["index"], batch_size=BATCH, seed=SEED, normalize=False)
    loader = StreamLoader(first, num_workers=2, start_method="forkserver")
    taken = [summary(item) for item in itertools.islice(loader, 3)]
    state = json.loads(json.dumps(loader.state_dict()))  # plain data: fits any checkpoint
    assert state["next_stream"] == 1

    resumed = ZarrCubeDataset(cube_url, ["index"], batch_size=BATCH, seed=SEED, normalize=False)
    resumed.load_state_dict(state)
    rest = [summary(i) for i in StreamLoader(resumed, num_workers=2, start_method="forkserver")]
    assert taken + rest == uninterrupted  # same batches, same order, nothing replayed
    done = {s for i in taken for s in i["samples"]}
    assert {s for i in rest for s in i["samples"]} == set(range(48)) - done

    with pytest.raises(StateMismatch, match="2 stream"):
        StreamLoader(resumed, num_workers=1)


def test_in_process_resume_and_a_state_from_another_dataset(cube_url: str) -> None:
    dataset = ZarrCubeDataset(cube_url, ["index"], batch_size=BATCH, seed=SEED)
    items = iter(dataset)
    head = [next(items)["sample"].tolist() for _ in range(5)]
    state = dataset.state_dict()
    rest = [item["sample"].tolist() for item in items]
    again = ZarrCubeDataset(cube_url, ["index"], batch_size=BATCH, seed=SEED)
    again.load_state_dict(state)
    assert [item["sample"].tolist() for item in again] == rest
    assert sorted(s for b in head + rest for s in b) == list(range(48))

    other = ZarrCubeDataset(cube_url, ["q"], batch_size=BATCH, seed=SEED)
    with pytest.raises(StateMismatch, match="fingerprint"):
        other.load_state_dict(state)


def test_each_chunk_is_read_once_per_epoch_and_then_from_the_cache(
    cube_url: str, tmp_path: Path
) -> None:
    cache = CacheSettings(str(tmp_path / "cache"), 64 * 2**20)
    dataset = ZarrCubeDataset(cube_url, ["index", "q"], batch_size=BATCH, cache=cache)
    before = dataset.fetches().copy()  # this process's reader served other tests too
    assert sum(len(item["sample"]) for item in dataset) == 48
    fetched = dataset.fetches() - before
    chunks = {key: n for key, n in fetched.items() if "/c/" in key}
    assert sorted(chunks) == sorted(f"{v}/c/{i}/0/0" for v in ("index", "q") for i in range(12))
    assert set(chunks.values()) == {1}  # every chunk fetched, none twice
    stats = dataset.cache_stats()
    assert stats is not None and (stats.hits, stats.misses) == (0, 24)  # 12 blocks x 2

    dataset.set_epoch(1)
    assert sum(len(item["sample"]) for item in dataset) == 48
    assert dataset.fetches() - before == fetched  # nothing fetched from the cube again
    assert (stats.hits, stats.misses) == (24, 24)

    again = ZarrCubeDataset(
        cube_url, ["index"], batch_size=48, shuffle=False, normalize=False, cache=cache
    )
    [item] = list(again)  # not normalised: not the cached blocks
    assert item["index"][:, 0, 0, 0].tolist() == list(range(48))


def test_values_are_normalised_with_the_manifest_statistics(cube_url: str) -> None:
    manifest, session = read_manifest(CubeLocation(cube_url))
    raw = np.asarray(zarr.open_group(session.store, mode="r")["t2m"][:])
    stats = manifest.variables["t2m"].stats
    dataset = ZarrCubeDataset(cube_url, ["t2m", "q"], batch_size=5, shuffle=False)
    item = next(iter(dataset))
    assert item["sample"].tolist() == [0, 1, 2, 3, 4]
    assert tuple(item["t2m"].shape) == (5, 1, 4, 8)
    expected = (raw[:5, None] - stats.mean) / stats.std
    np.testing.assert_allclose(item["t2m"].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert abs(float(dataset.manifest.variables["t2m"].stats.mean) - float(raw.mean())) < 1e-3


def test_windows_span_rows_and_blocks(tmp_path: Path) -> None:
    url = (tmp_path / "windowed").as_uri()
    manifest = make_cube(url, times=20, chunk=4, window=3, stride=2)
    assert manifest.samples.count == 9
    dataset = ZarrCubeDataset(url, ["index"], batch_size=2, normalize=False, seed=1)
    seen = []
    for item in dataset:
        for sample, rows in zip(
            item["sample"].tolist(), item["index"][:, :, 0, 0].tolist(), strict=True
        ):
            assert rows == [2 * sample, 2 * sample + 1, 2 * sample + 2]
            seen.append(sample)
    assert sorted(seen) == list(range(9))


def test_train_and_validation_splits_hold_different_blocks(cube_url: str) -> None:
    train = ZarrCubeDataset(cube_url, ["index"], split="train", val_fraction=0.25)
    val = ZarrCubeDataset(cube_url, ["index"], split="val", val_fraction=0.25, shuffle=False)
    assert (train.samples, val.samples) == (36, 12)
    assert [s for item in val for s in item["sample"].tolist()] == list(range(36, 48))
    with pytest.raises(ValueError, match="no variable 'nope'"):
        ZarrCubeDataset(cube_url, ["nope"])
