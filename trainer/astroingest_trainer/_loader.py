"""A DataLoader over a stream dataset that keeps the dataset's state in step with what
the consumer has actually taken (not what the workers have prefetched)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Generator
from typing import Any

from torch.utils.data import DataLoader

from astroingest_trainer._stream import PROGRESS, StateMismatch, StreamDataset

# What the forkserver imports once, so that each worker it forks starts in a fraction of
# a second instead of importing torch again (it never opens a store: forks stay safe).
PRELOAD = [
    "torch",
    "numpy",
    "zarr",
    "icechunk",
    "astroingest_trainer._cube_dataset",
    "astroingest_trainer._files_dataset",
]


class StreamLoader:
    """Iterate it like a DataLoader; ``state_dict`` is the dataset's, up to the last item
    yielded. Items come already batched by the dataset (``batch_size=None`` here) and keep
    their ``"progress"`` (which stream of this rank served them, and where it stands)."""

    def __init__(
        self,
        dataset: StreamDataset[Any],
        *,
        num_workers: int = 0,
        start_method: str | None = None,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
    ) -> None:
        expected = dataset.streams
        if expected is not None and expected != max(1, num_workers):
            raise StateMismatch(
                f"the dataset state was saved with {expected} stream(s) per rank; "
                f"use num_workers={expected if expected > 1 else 0}"
            )
        self.dataset = dataset
        self.num_workers = num_workers
        extra: dict[str, Any] = {}
        if num_workers:
            extra = {
                # Each iteration starts workers with the dataset's current state (never
                # persistent ones: they would keep the state they started with).
                "multiprocessing_context": _context(start_method or dataset.start_method()),
                "prefetch_factor": prefetch_factor,
            }
        self.loader: DataLoader[Any] = DataLoader(
            dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **extra
        )

    def __iter__(self) -> Generator[dict[str, Any], None, None]:
        batches = iter(self.loader)
        try:
            for item in batches:
                self.dataset.advance(item[PROGRESS])
                yield item
        finally:
            # Stop the workers now, not whenever the garbage collector finds the iterator
            # (an endless stream's workers would sit on their prefetched batches till then).
            stop = getattr(batches, "_shutdown_workers", None)
            if stop is not None:
                stop()

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)


def _context(method: str) -> Any:
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(PRELOAD)
    return context
