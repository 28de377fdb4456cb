"""Cube samples into torch: ZarrCubeDataset against a numpy memmap and xbatcher, then S3.

One climate-like cube (t2m, q, tcc on a 64 x 64 grid, smooth fields plus noise, in
chunks of 128 time steps; zstd by default, ``--codec blosc`` for blosc-zstd with byte
shuffle) is read in these ways, each with 2 DataLoader workers and batches of 32, all
normalised float32 tensors except xbatcher's (it gets to skip that):

- ZarrCubeDataset reading the local cube (Icechunk on local disk), shuffled samples;
- ZarrCubeDataset with its disk cache (decoded, normalised blocks), once it is filled;
- the same raw float32 bytes as .npy files read through numpy memmaps (the local-disk
  limit: no decompression, no store), the same batches of shuffled samples;
- xbatcher + xarray over the same cube (``xr.open_zarr`` on the Icechunk session), batches
  of 32 consecutive time steps in shuffled order (the xbatcher way: easier than ours);
- ZarrCubeDataset from a moto S3 server, a first epoch with an empty disk cache (cold)
  and the next one from the cache (warm).

Local figures are samples/s over a whole epoch once a first epoch has passed (worker
start-up and warm-up left out; workers persist), the best of ``--repeat`` epochs taken
in turns. On S3 the cold figure is the first epoch (from the moment every worker has
delivered a batch), the warm one the next epoch of the same stream. Targets: >= 0.8x
the memmap; >= 2x xbatcher; the warm epoch >= 3x the cold one. Needs the test extras
(moto server, xbatcher).

    python bench/loader.py [--samples 4096] [--s3-samples 4096] [--repeat 3] [--codec zstd]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from astroingest.cubes import Array, Batch, CubeLocation, CubeWriter, Layout, read_manifest
from astroingest_trainer import CacheSettings, StreamLoader, ZarrCubeDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.s3server import CREDENTIALS, MotoServer  # noqa: E402

VARIABLES = ["t2m", "q", "tcc"]
GRID = 64
CHUNK = 128
BATCH = 32
WORKERS = 2
BUCKET = "bench-cubes"


def write_cube(location: CubeLocation, samples: int, codec: str = "zstd") -> None:
    """Appended 512 time steps at a time: the writer never holds the whole cube."""
    rng = np.random.default_rng(0)
    la = np.linspace(-1, 1, GRID)[None, :, None]
    lo = np.linspace(0, 2 * np.pi, GRID, endpoint=False)[None, None, :]
    layout = Layout("time", chunks={"time": CHUNK}, codec=codec)
    with CubeWriter(location, "bench", "grid", layout) as writer:
        for start in range(0, samples, 512):
            t = np.arange(start, min(samples, start + 512), dtype="int64")
            phase = t[:, None, None] / 24
            shape = (len(t), GRID, GRID)
            q = np.sin(lo + phase) * np.cos(la) + 0.05 * rng.standard_normal(shape)
            tcc = np.cos(2 * lo - phase) * la + 0.05 * rng.standard_normal(shape)
            fields = {"t2m": 280 + 10 * q - 5 * tcc + 3 * la, "q": q, "tcc": tcc}
            grid = ("time", "lat", "lon")
            writer.append(
                Batch(
                    {k: Array(grid, v.astype("f4")) for k, v in fields.items()},
                    {"time": Array(("time",), t)},
                )
            )
        writer.commit({"bench/x.nc": "0" * 64}, {})


def memmaps(location: CubeLocation, directory: Path) -> dict[str, Path]:
    """The cube's variables as raw float32 .npy files (what the memmap reads)."""
    import zarr

    _, session = read_manifest(location)
    group = zarr.open_group(session.store, mode="r")
    paths = {}
    for name in VARIABLES:
        paths[name] = directory / f"{name}.npy"
        array: Any = group[name]
        np.save(paths[name], np.asarray(array[:], dtype=np.float32))
    return paths


class MemmapBatches(Dataset[dict[str, torch.Tensor]]):
    """Batches of shuffled rows gathered from memmaps, normalised like ours."""

    def __init__(self, paths: dict[str, Path], stats: dict[str, tuple[float, float]]) -> None:
        self.paths = paths
        self.stats = stats
        self.length = int(np.load(next(iter(paths.values())), mmap_mode="r").shape[0])
        self._maps: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        if self._maps is None:
            self._maps = {k: np.load(p, mmap_mode="r") for k, p in self.paths.items()}
        rows = sorted(rows)
        batch = {}
        for name, data in self._maps.items():
            mean, std = self.stats[name]
            values = np.asarray(data[rows], dtype=np.float32)[:, None]
            values -= np.float32(mean)
            values *= np.float32(1 / std)
            batch[name] = torch.from_numpy(values)
        return batch


def memmap_loader(paths: dict[str, Path], location: CubeLocation) -> DataLoader[Any]:
    manifest, _ = read_manifest(location)
    stats = {
        n: (manifest.variables[n].stats.mean, manifest.variables[n].stats.std) for n in VARIABLES
    }
    dataset = MemmapBatches(paths, stats)
    sampler = BatchSampler(RandomSampler(range(len(dataset))), BATCH, drop_last=False)
    return DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=WORKERS, persistent_workers=True
    )


def xbatcher_loader(location: CubeLocation) -> DataLoader[Any]:
    import xarray as xr
    import xbatcher  # type: ignore[import-untyped]
    from xbatcher.loaders.torch import MapDataset  # type: ignore[import-untyped]

    _, session = read_manifest(location)
    array = xr.open_zarr(session.store, consolidated=False)[VARIABLES].to_array("var")
    generator = xbatcher.BatchGenerator(array, input_dims={"time": BATCH, "lat": GRID, "lon": GRID})
    return DataLoader(
        MapDataset(generator),
        batch_size=None,
        shuffle=True,
        num_workers=WORKERS,
        multiprocessing_context="spawn",  # Icechunk does not survive fork
        persistent_workers=True,
    )


def ours(location: CubeLocation, cache: CacheSettings | None = None) -> StreamLoader:
    """An endless stream (epoch after epoch), as the trainer reads it."""
    dataset = ZarrCubeDataset(location, VARIABLES, batch_size=BATCH, epochs=None, cache=cache)
    return StreamLoader(dataset, num_workers=WORKERS)


def samples_in(batch: Any) -> int:
    if isinstance(batch, dict):
        return len(batch["t2m"])
    return int(batch.shape[1])  # xbatcher: [var, time, lat, lon]


def take(batches: Iterator[Any], samples: int) -> None:
    while samples > 0:
        samples -= samples_in(next(batches))


def timed(batches: Iterator[Any], samples: int) -> float:
    """Samples per second over the next ``samples`` samples."""
    start = time.perf_counter()
    take(batches, samples)
    return samples / (time.perf_counter() - start)


def epochs(loader: DataLoader[Any]) -> Iterator[Any]:
    """A map-style loader's batches, epoch after epoch (its workers persist)."""
    while True:
        yield from loader


def report(label: str, value: float) -> None:
    print(f"  {label:<40} {value:9.0f} samples/s  ({value * 3 * GRID * GRID * 4 / 1e6:6.0f} MB/s)")


def compare(loaders: dict[str, Iterator[Any]], samples: int, repeat: int) -> dict[str, float]:
    """Each loader's best epoch after a first one (start-up and warm-up left out), taken
    in turns so that a busy moment on the machine does not fall on one loader only."""
    for batches in loaders.values():
        take(batches, samples)
    best = dict.fromkeys(loaders, 0.0)
    for _ in range(repeat):
        for label, batches in loaders.items():
            best[label] = max(best[label], timed(batches, samples))
    for label, value in best.items():
        report(label, value)
    return best


def local_part(root: Path, samples: int, repeat: int, codec: str) -> None:
    location = CubeLocation((root / "cube").as_uri())
    write_cube(location, samples, codec)
    paths = memmaps(location, root)
    size = sum(p.stat().st_size for p in paths.values()) / 2**20
    print(
        f"local cube ({codec}): {samples} samples of 3 x {GRID} x {GRID} float32 "
        f"({size:.0f} MiB raw), batch {BATCH}, {WORKERS} workers"
    )
    cache = CacheSettings(str(root / "local-cache"), 4 * 2**30)
    streams = {
        "ZarrCubeDataset, reading the cube": iter(ours(location)),
        "ZarrCubeDataset, from its disk cache": iter(ours(location, cache)),
    }
    loaders = {
        **streams,
        "numpy memmap, same bytes": epochs(memmap_loader(paths, location)),
        "xbatcher + xarray, same cube": epochs(xbatcher_loader(location)),
    }
    rate = compare(loaders, samples, repeat)
    for stream in streams.values():
        stream.close()
    direct, cached = (
        rate["ZarrCubeDataset, reading the cube"],
        rate["ZarrCubeDataset, from its disk cache"],
    )
    memmap, xbatcher = rate["numpy memmap, same bytes"], rate["xbatcher + xarray, same cube"]
    print(
        f"  vs memmap: {direct / memmap:.2f}x reading the cube, {cached / memmap:.2f}x from the "
        f"cache (target >= 0.8); vs xbatcher: {direct / xbatcher:.2f}x (target >= 2)"
    )


def s3_part(root: Path, samples: int, codec: str) -> None:
    os.environ.update(CREDENTIALS)
    server = MotoServer().start()
    try:
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint
        server.client().create_bucket(Bucket=BUCKET)
        location = CubeLocation(f"s3://{BUCKET}/cubes/bench", endpoint_url=server.endpoint)
        write_cube(location, samples, codec)
        cache = CacheSettings(str(root / "cache"), 4 * 2**30)
        print(
            f"S3 cube (moto at {server.endpoint}): {samples} samples, disk cache {cache.directory}"
        )
        stream = iter(ours(location, cache))
        take(stream, WORKERS * BATCH)  # every worker up: start-up left out
        cold = timed(stream, samples - WORKERS * BATCH)
        report("ZarrCubeDataset, cold cache (epoch 0)", cold)
        warm = timed(stream, samples)
        report("ZarrCubeDataset, warm cache (epoch 1)", warm)
        stream.close()
        print(f"  warm vs cold: {warm / cold:.2f}x (target >= 3)")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=4096, help="time steps of the local cube")
    parser.add_argument("--s3-samples", type=int, default=4096, help="time steps of the S3 cube")
    parser.add_argument("--repeat", type=int, default=3, help="epochs per local loader (best)")
    parser.add_argument("--codec", choices=("zstd", "blosc"), default="zstd", help="the cube's")
    args = parser.parse_args()
    os.environ.setdefault("ICECHUNK_LOG", "error")  # not its local-disk warning per worker
    with tempfile.TemporaryDirectory() as tmp:
        local_part(Path(tmp), args.samples, args.repeat, args.codec)
        s3_part(Path(tmp), args.s3_samples, args.codec)


if __name__ == "__main__":
    main()
