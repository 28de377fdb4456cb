"""What both datasets share: sharded, shuffled, prefetched streams of blocks, resumable.

A dataset defines its ``blocks`` (see ``_sharding``), how to read one (``read_block``,
run ahead on a small thread pool) and how to turn samples of read blocks into an item
(``emit``). This class does the rest: it finds its reader among ranks x DataLoader
workers, walks that reader's blocks from its cursor, groups samples into batches, and
tags every item with its ``Progress`` so that the process that consumes the items can
tell exactly where each reader stands (``advance``) and save it (``state_dict``).

Resuming with DataLoader workers: the DataLoader takes items from its workers
round-robin, starting at worker 0. So that a resumed run sees the same items in the
same order, worker ``w`` serves stream ``(w + next_stream) % workers`` where
``next_stream`` is the stream the next item was due from.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from astroingest_trainer._sharding import Blocks, Cursor, Step, advance, consumer_index, walk

PROGRESS = "progress"  # the key of each item's Progress
SAMPLE = "sample"  # the key of each item's global sample indices
B = TypeVar("B")  # what read_block returns


@dataclass(frozen=True, slots=True)
class Progress:
    """Where reader ``stream`` (of ``streams`` in this rank) stands after this item."""

    stream: int
    streams: int
    cursor: Cursor


class StateMismatch(ValueError):
    """A saved dataset state does not fit this dataset or this rank x worker layout."""


class StreamDataset(IterableDataset[dict[str, Any]], Generic[B], abc.ABC):
    blocks: Blocks

    def __init__(
        self,
        *,
        batch_size: int | None,
        shuffle: bool,
        seed: int,
        epoch: int,
        epochs: int | None,
        prefetch: int,
        rank: int | None,
        world_size: int | None,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if epochs is not None and epochs < 1:
            raise ValueError("epochs must be at least 1 (or None: endless)")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.epochs = epochs
        self.prefetch = max(0, prefetch)
        self.rank, self.world_size = _placement(rank, world_size)
        self._cursors: dict[int, Cursor] = {}
        self._streams: int | None = None
        self._next_stream = 0

    # -- what a dataset defines -------------------------------------------------------

    @abc.abstractmethod
    def read_block(self, block: int) -> B:
        """Read one block (runs on a prefetch thread of the reading process)."""

    @abc.abstractmethod
    def emit(self, pieces: Sequence[tuple[B, np.ndarray]]) -> dict[str, Any]:
        """One item from samples of read blocks: ``(block data, sample indices)`` pairs
        (``"sample"``, the indices, is added when the item has none)."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """What a saved state must match: the data and how it is cut into blocks."""

    def start_method(self) -> str:
        """The multiprocessing start method DataLoader workers need for this data."""
        return "spawn"

    # -- iteration --------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        streams = info.num_workers if info is not None else 1
        if self._streams is not None and self._streams != streams:
            raise StateMismatch(
                f"this dataset state was saved with {self._streams} DataLoader worker(s) per "
                f"rank; resume with the same number (got {streams})"
            )
        stream = ((info.id if info is not None else 0) + self._next_stream) % streams
        for item in self._serve(stream, streams):
            if info is None:  # consumed in this process: keep the state current here
                self.advance(item[PROGRESS])
            yield item

    def _serve(self, stream: int, streams: int) -> Iterator[dict[str, Any]]:
        steps = walk(
            self.blocks,
            seed=self.seed,
            shuffle=self.shuffle,
            consumer=consumer_index(self.rank, self.world_size, stream),
            consumers=self.world_size * streams,
            start=self._cursors.get(stream, Cursor(self.epoch)),
            end_epoch=None if self.epochs is None else self.epoch + self.epochs,
        )
        size = self.batch_size or 1
        pieces: list[tuple[B, np.ndarray]] = []
        wanted = size
        for step, data in prefetched(steps, self.read_block, self.prefetch):
            served = 0
            while served < len(step.samples):
                take = min(wanted, len(step.samples) - served)
                pieces.append((data, step.samples[served : served + take]))
                served += take
                wanted -= take
                if wanted == 0:
                    yield self._item(pieces, stream, streams, step, served)
                    pieces, wanted = [], size
        if pieces:  # the last, short batch of a finite run
            yield self._item(pieces, stream, streams, step, served)

    def _item(
        self,
        pieces: list[tuple[B, np.ndarray]],
        stream: int,
        streams: int,
        step: Step,
        served: int,
    ) -> dict[str, Any]:
        item = self.emit(pieces)
        if SAMPLE not in item:
            samples = np.concatenate([samples for _, samples in pieces])
            item[SAMPLE] = (
                torch.from_numpy(samples) if self.batch_size else torch.tensor(samples[0])
            )
        cursor = advance(step.cursor, served, self.blocks.size(step.block))
        item[PROGRESS] = Progress(stream, streams, cursor)
        return item

    # -- state ------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start over at the beginning of ``epoch`` (forgets positions within epochs)."""
        self.epoch = epoch
        self._cursors.clear()
        self._streams = None
        self._next_stream = 0

    def advance(self, progress: Progress) -> None:
        """Record that the item carrying ``progress`` was consumed."""
        self._cursors[progress.stream] = progress.cursor
        self._streams = progress.streams
        self._next_stream = (progress.stream + 1) % progress.streams

    def state_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint(),
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": self.epoch,
            "rank": self.rank,
            "world_size": self.world_size,
            "streams": self._streams,
            "next_stream": self._next_stream,
            "cursors": {str(s): c.as_list() for s, c in sorted(self._cursors.items())},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, mine in (
            ("fingerprint", self.fingerprint()),
            ("seed", self.seed),
            ("shuffle", self.shuffle),
            ("rank", self.rank),
            ("world_size", self.world_size),
        ):
            if state.get(name) != mine:
                raise StateMismatch(
                    f"the saved dataset state has {name} {state.get(name)!r}, this dataset {mine!r}"
                )
        self.epoch = int(state["epoch"])
        self._streams = None if state["streams"] is None else int(state["streams"])
        self._next_stream = int(state["next_stream"])
        self._cursors = {int(s): Cursor.from_list(c) for s, c in state["cursors"].items()}

    @property
    def streams(self) -> int | None:
        """DataLoader workers (1 without) the saved state needs; None: any number."""
        return self._streams

    def current_epoch(self) -> int:
        """The epoch of the reader furthest behind (the start epoch before any item)."""
        return min((c.epoch for c in self._cursors.values()), default=self.epoch)


def _placement(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        return rank, world_size
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


T = TypeVar("T")


def prefetched(
    steps: Iterator[Step], read: Callable[[int], T], depth: int
) -> Iterator[tuple[Step, T]]:
    """Each step with its block read, ``depth`` reads running ahead (memory: depth + 1 blocks)."""
    if depth == 0:
        for step in steps:
            yield step, read(step.block)
        return
    pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="astroingest-prefetch")
    pending: deque[tuple[Step, Future[T]]] = deque()
    try:
        for step in steps:
            pending.append((step, pool.submit(read, step.block)))
            if len(pending) > depth:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True)
