"""The split of an epoch across ranks x workers, on block layouts alone (no data)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from astroingest_trainer._sharding import (
    Blocks,
    Cursor,
    Step,
    advance,
    consumer_index,
    global_order,
    interleave,
    walk,
)

# Uneven blocks, as a cube's last chunk or a windowed split gives them.
BLOCKS = Blocks((0, 4, 8, 12, 16, 20, 24, 25), (4, 8, 12, 16, 20, 24, 25, 30))


def streams_of(world: int, workers: int, epoch: int, seed: int = 7) -> dict[int, list[list[int]]]:
    """Each reader's blocks (each a list of samples) for one epoch, by consumer index."""
    readers = world * workers
    found: dict[int, list[list[int]]] = {}
    for rank, stream in itertools.product(range(world), range(workers)):
        consumer = consumer_index(rank, world, stream)
        steps = walk(
            BLOCKS,
            seed=seed,
            shuffle=True,
            consumer=consumer,
            consumers=readers,
            start=Cursor(epoch),
            end_epoch=epoch + 1,
        )
        found[consumer] = [step.samples.tolist() for step in steps]
    return found


@pytest.mark.parametrize(("world", "workers"), list(itertools.product([1, 2], [1, 2, 3])))
def test_every_sample_once_and_the_global_order_for_any_layout(world: int, workers: int) -> None:
    for epoch in (0, 1):
        streams = streams_of(world, workers, epoch)
        served = [s for blocks in streams.values() for block in blocks for s in block]
        assert sorted(served) == list(range(BLOCKS.samples))  # full coverage, no overlap
        merged = interleave([streams[c] for c in range(world * workers)])
        assert merged == global_order(BLOCKS, 7, epoch).tolist()


def test_the_order_depends_on_seed_and_epoch_only() -> None:
    first = global_order(BLOCKS, 7, 0)
    assert np.array_equal(first, global_order(BLOCKS, 7, 0))
    assert not np.array_equal(first, global_order(BLOCKS, 7, 1))
    assert not np.array_equal(first, global_order(BLOCKS, 8, 0))
    assert sorted(first.tolist()) == list(range(BLOCKS.samples))
    # a block's samples stay together: each block is read once
    block_of = BLOCKS.block_of()
    runs = [b for b, _ in itertools.groupby(block_of[s] for s in first.tolist())]
    assert sorted(runs) == list(range(len(BLOCKS)))


def test_unshuffled_order_is_sample_order() -> None:
    assert global_order(BLOCKS, 7, 3, shuffle=False).tolist() == list(range(BLOCKS.samples))


def test_resuming_from_any_position_serves_exactly_the_rest() -> None:
    def steps(start: Cursor) -> list[Step]:
        return list(
            walk(BLOCKS, seed=3, shuffle=True, consumer=1, consumers=2, start=start, end_epoch=2)
        )

    order: list[int] = []
    after: list[Cursor] = []  # the position after each sample, as a dataset records it
    for step in steps(Cursor(0)):
        for served, sample in enumerate(step.samples.tolist(), start=1):
            order.append(sample)
            after.append(advance(step.cursor, served, BLOCKS.size(step.block)))
    assert len(order) > 2 * 10  # two epochs of this reader
    for done, cursor in enumerate(after, start=1):
        rest = [s for step in steps(cursor) for s in step.samples.tolist()]
        assert rest == order[done:]


def test_a_reader_without_blocks_serves_nothing_and_ends() -> None:
    few = Blocks((0, 2), (2, 4))
    steps = walk(
        few, seed=0, shuffle=True, consumer=3, consumers=4, start=Cursor(0), end_epoch=None
    )
    assert list(steps) == []
