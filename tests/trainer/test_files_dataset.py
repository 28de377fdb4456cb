"""StoreFilesDataset: .pt/.pth/.npz/.npy objects from a local store and from S3."""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from astroingest_trainer._cache import CacheSettings
from astroingest_trainer._files_dataset import StoreFilesDataset
from astroingest_trainer._loader import StreamLoader
from astroingest_trainer._stream import PROGRESS
from tests.s3server import MotoServer


def payloads() -> dict[str, bytes]:
    """Ten samples in the four formats, each holding its own number; and one stranger."""
    found: dict[str, bytes] = {}
    for n in range(10):
        buffer = io.BytesIO()
        kind = n % 4
        if kind == 0:
            np.save(buffer, np.full(3, n, dtype=np.float32))
            name = f"s{n:02d}.npy"
        elif kind == 1:
            np.savez(buffer, x=np.full(3, n), y=np.arange(2))
            name = f"s{n:02d}.npz"
        else:
            torch.save(
                {"x": torch.full((3,), float(n))} if kind == 2 else torch.full((3,), n), buffer
            )
            name = f"s{n:02d}.{'pt' if kind == 2 else 'pth'}"
        found[f"samples/{name}"] = buffer.getvalue()
    found["samples/README.txt"] = b"not a sample"
    return found


def number(data: Any) -> int:
    tensor = data["x"] if isinstance(data, dict) else data
    return int(tensor[0])


@pytest.fixture
def local_url(tmp_path: Path) -> str:
    for key, body in payloads().items():
        (tmp_path / "store" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "store" / key).write_bytes(body)
    return (tmp_path / "store").as_uri()


def keys_of(items: list[dict[str, Any]]) -> list[str]:
    return [item["key"] for item in items]


def test_every_object_once_across_ranks_and_workers(local_url: str) -> None:
    expected = sorted(k for k in payloads() if not k.endswith(".txt"))
    orders = set()
    for world, workers in itertools.product((1, 2), (0, 2)):
        items = []
        for rank in range(world):
            dataset = StoreFilesDataset(local_url, "samples/", seed=3, rank=rank, world_size=world)
            items += list(StreamLoader(dataset, num_workers=workers))
        assert sorted(keys_of(items)) == expected, (world, workers)
        for item in items:
            assert number(item["data"]) == int(item["key"][len("samples/s") :][:2])
            assert item["sample"].ndim == 0
        orders.add(tuple(keys_of(items)))
    assert len(orders) > 1  # the layouts interleave differently; the set is the same


def test_formats_load_as_tensors(local_url: str) -> None:
    dataset = StoreFilesDataset(local_url, "samples/", shuffle=False)
    first = {item["key"]: item["data"] for item in dataset}
    assert isinstance(first["samples/s00.npy"], torch.Tensor)
    assert set(first["samples/s01.npz"]) == {"x", "y"}
    assert isinstance(first["samples/s02.pt"], dict)
    assert torch.equal(first["samples/s03.pth"], torch.full((3,), 3))


def test_resume_mid_epoch_with_workers(local_url: str) -> None:
    whole = list(StreamLoader(files_dataset(local_url), num_workers=2))
    first = files_dataset(local_url)
    loader = StreamLoader(first, num_workers=2)
    head = list(itertools.islice(loader, 5))
    state = loader.state_dict()
    second = files_dataset(local_url)
    second.load_state_dict(state)
    rest = list(StreamLoader(second, num_workers=2))
    assert keys_of(head + rest) == keys_of(whole)
    assert [i[PROGRESS].stream for i in head + rest] == [i[PROGRESS].stream for i in whole]


def files_dataset(url: str) -> StoreFilesDataset:
    return StoreFilesDataset(url, "samples/", seed=11, epoch=2)


def test_from_s3_with_a_warm_cache(s3: MotoServer, tmp_path: Path) -> None:
    client = s3.client()
    client.create_bucket(Bucket="train-files")
    for key, body in payloads().items():
        client.put_object(Bucket="train-files", Key=f"set/{key}", Body=body)
    cache = CacheSettings(str(tmp_path / "cache"), 2**20)
    dataset = StoreFilesDataset(
        "s3://train-files/set", "samples/", options={"endpoint_url": s3.endpoint}, cache=cache
    )
    assert len(dataset.objects) == 10
    cold = {item["key"]: number(item["data"]) for item in dataset}
    stats = dataset.cache_stats()
    assert stats is not None and (stats.hits, stats.misses) == (0, 10)
    dataset.set_epoch(1)
    warm = {item["key"]: number(item["data"]) for item in dataset}
    assert warm == cold and len(warm) == 10
    assert (stats.hits, stats.misses) == (10, 10)


def test_a_broken_object_names_its_key(tmp_path: Path) -> None:
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    dataset = StoreFilesDataset(tmp_path.as_uri())
    with pytest.raises(ValueError, match=r"cannot load bad\.npy"):
        next(iter(dataset))
