"""astroingest's training side: streams Zarr cubes into PyTorch (install the ``train`` extra).

Kept apart from ``astroingest`` so that the ingestion host never imports torch; and the
names below are imported on first use, so that loading the ``astroingest train``
command (every ``astroingest`` invocation does) costs no torch either.

    from astroingest_trainer import StreamLoader, ZarrCubeDataset

    dataset = ZarrCubeDataset("s3://bucket/cubes/era5", ["t2m", "q"], batch_size=32)
    for batch in StreamLoader(dataset, num_workers=2):
        ...  # batch["t2m"]: [32, window, lat, lon], normalised
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from astroingest._version import __version__

if TYPE_CHECKING:
    from astroingest_trainer._cache import CacheSettings
    from astroingest_trainer._checkpoint import CheckpointStore
    from astroingest_trainer._config import TrainConfig, load_train_config
    from astroingest_trainer._cube_dataset import ZarrCubeDataset
    from astroingest_trainer._files_dataset import StoreFilesDataset
    from astroingest_trainer._loader import StreamLoader
    from astroingest_trainer._model import Surrogate
    from astroingest_trainer._train import TrainResult, train

_EXPORTS = {
    "CacheSettings": "_cache",
    "CheckpointStore": "_checkpoint",
    "StoreFilesDataset": "_files_dataset",
    "StreamLoader": "_loader",
    "Surrogate": "_model",
    "TrainConfig": "_config",
    "TrainResult": "_train",
    "ZarrCubeDataset": "_cube_dataset",
    "load_train_config": "_config",
    "train": "_train",
}

__all__ = [
    "CacheSettings",
    "CheckpointStore",
    "StoreFilesDataset",
    "StreamLoader",
    "Surrogate",
    "TrainConfig",
    "TrainResult",
    "ZarrCubeDataset",
    "__version__",
    "load_train_config",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'astroingest_trainer' has no attribute {name!r}")
    return getattr(importlib.import_module(f"astroingest_trainer.{module}"), name)
