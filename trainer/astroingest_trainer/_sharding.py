"""Which sample each (rank, worker) reads, in which order, in every epoch.

The unit of reading is a *block*: a run of samples read together (the sample windows
whose start lies in one chunk along the sample dimension of a cube, or one object of a
files dataset). An epoch's **global order** depends only on ``(seed, epoch)``:

1. the blocks are permuted with a generator seeded from ``(seed, epoch)``;
2. the samples inside block ``b`` are permuted with one seeded from ``(seed, epoch, b)``;
3. the global order is the concatenation of the blocks in that order.

There are ``consumers = world_size * max(1, num_workers)`` readers; reader ``c`` (see
``consumer_index``) takes the blocks at positions ``c, c + consumers, c + 2 * consumers…``
of the permuted block list and serves their samples in the global order. Every block
therefore belongs to exactly one reader (a chunk is fetched once per epoch), every sample
is served exactly once, and merging the readers' block sequences round-robin gives back
the global order, for any number of ranks and workers (``interleave``).

A reader's position is a ``Cursor`` (epoch, index into its own block list, samples done
in that block): resuming needs no replay of earlier samples, only the permutation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a reader stands: ``epoch``, ``block`` (into its own blocks), ``offset`` (in it)."""

    epoch: int
    block: int = 0
    offset: int = 0

    def as_list(self) -> list[int]:
        return [self.epoch, self.block, self.offset]

    @classmethod
    def from_list(cls, values: Sequence[int]) -> Cursor:
        epoch, block, offset = (int(v) for v in values)
        return cls(epoch, block, offset)


@dataclass(frozen=True, slots=True)
class Blocks:
    """Blocks of sample indices: block ``b`` holds samples ``starts[b] .. stops[b] - 1``."""

    starts: tuple[int, ...]
    stops: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.starts)

    def size(self, block: int) -> int:
        return self.stops[block] - self.starts[block]

    @property
    def samples(self) -> int:
        return sum(stop - start for start, stop in zip(self.starts, self.stops, strict=True))

    def block_of(self) -> dict[int, int]:
        """Sample index -> block (for tests and tools; O(samples))."""
        return {
            sample: block
            for block, (start, stop) in enumerate(zip(self.starts, self.stops, strict=True))
            for sample in range(start, stop)
        }


@dataclass(frozen=True, slots=True)
class Step:
    """One block as a reader serves it: the samples still to serve, in order."""

    block: int  # index into Blocks
    samples: np.ndarray  # global sample indices, in serving order
    cursor: Cursor  # the reader's position before the first of ``samples``


def consumer_index(rank: int, world_size: int, stream: int) -> int:
    """Stream-major numbering: the first ``world_size`` blocks go to stream 0 of each rank,
    so ranks stepping together read the head of the global order first."""
    return stream * world_size + rank


def block_order(seed: int, epoch: int, count: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(count, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    return rng.permutation(count).astype(np.int64)


def sample_order(blocks: Blocks, block: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    start, stop = blocks.starts[block], blocks.stops[block]
    samples = np.arange(start, stop, dtype=np.int64)
    if not shuffle or stop - start < 2:
        return samples
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, block])))
    return rng.permutation(samples)


def global_order(blocks: Blocks, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The epoch's samples in global order (what any layout of readers serves, merged)."""
    order = block_order(seed, epoch, len(blocks), shuffle)
    parts = [sample_order(blocks, int(b), seed, epoch, shuffle) for b in order]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def own_blocks(
    blocks: Blocks, seed: int, epoch: int, shuffle: bool, consumer: int, consumers: int
) -> np.ndarray:
    return block_order(seed, epoch, len(blocks), shuffle)[consumer::consumers]


def walk(
    blocks: Blocks,
    *,
    seed: int,
    shuffle: bool,
    consumer: int,
    consumers: int,
    start: Cursor,
    end_epoch: int | None,
) -> Iterator[Step]:
    """The blocks reader ``consumer`` serves from ``start`` up to (not including)
    ``end_epoch``, or forever when it is None."""
    if consumer >= len(blocks):
        return  # more readers than blocks: this one never has anything to serve
    cursor = start
    while end_epoch is None or cursor.epoch < end_epoch:
        mine = own_blocks(blocks, seed, cursor.epoch, shuffle, consumer, consumers)
        for position in range(cursor.block, len(mine)):
            block = int(mine[position])
            offset = cursor.offset if position == cursor.block else 0
            order = sample_order(blocks, block, seed, cursor.epoch, shuffle)
            if offset < len(order):
                yield Step(block, order[offset:], Cursor(cursor.epoch, position, offset))
        cursor = Cursor(cursor.epoch + 1)


def advance(cursor: Cursor, served: int, block_size: int) -> Cursor:
    """The position after serving ``served`` more samples of the cursor's block."""
    offset = cursor.offset + served
    if offset >= block_size:
        return Cursor(cursor.epoch, cursor.block + 1, 0)
    return Cursor(cursor.epoch, cursor.block, offset)


def interleave(streams: Sequence[Sequence[Sequence[int]]]) -> list[int]:
    """Merge readers' block sequences (reader -> blocks -> samples) round-robin: blocks
    ``0, 1, …, consumers - 1`` first, then the second block of each reader, and so on."""
    merged: list[int] = []
    depth = max((len(s) for s in streams), default=0)
    for row in range(depth):
        for stream in streams:
            if row < len(stream):
                merged.extend(stream[row])
    return merged
