"""Per-variable statistics in one streaming pass, mergeable across batches and versions.

Chan et al.'s pairwise update: each batch contributes (count, mean, M2, min, max,
NaN count), and two summaries merge exactly, so appending time steps to a cube updates
its statistics without reading the old data again.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Stats:
    count: int = 0  # finite values
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    min: float = math.inf
    max: float = -math.inf
    nan_count: int = 0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    @classmethod
    def of(cls, values: Any) -> Stats:
        """The summary of one batch (a numpy array of any shape)."""
        import numpy as np

        flat = np.asarray(values).ravel()
        nans = 0
        if flat.dtype.kind == "f":
            finite = np.isfinite(flat)
            nans = int(flat.size - np.count_nonzero(finite))
            if nans:
                flat = flat[finite]
        if flat.size == 0:
            return cls(nan_count=nans)
        # One float64 temporary: the deviations, squared and summed by a dot product.
        mean = float(flat.mean(dtype=np.float64))
        deviations = flat.astype(np.float64)
        deviations -= mean
        m2 = float(np.dot(deviations, deviations))
        return cls(int(flat.size), mean, m2, float(flat.min()), float(flat.max()), nans)

    def merge(self, other: Stats) -> Stats:
        if other.count == 0:
            return Stats(
                self.count, self.mean, self.m2, self.min, self.max, self.nan_count + other.nan_count
            )
        if self.count == 0:
            return Stats(
                other.count,
                other.mean,
                other.m2,
                other.min,
                other.max,
                self.nan_count + other.nan_count,
            )
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / count
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / count
        return Stats(
            count,
            mean,
            m2,
            min(self.min, other.min),
            max(self.max, other.max),
            self.nan_count + other.nan_count,
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["std"] = self.std
        if not self.count:  # JSON has no infinities
            data["min"] = data["max"] = None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        low, high = data.get("min"), data.get("max")
        return cls(
            int(data["count"]),
            float(data["mean"]),
            float(data["m2"]),
            math.inf if low is None else float(low),
            -math.inf if high is None else float(high),
            int(data["nan_count"]),
        )
