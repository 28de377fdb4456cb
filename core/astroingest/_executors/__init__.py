"""Where a run's transfers happen: ``local`` (the engine's own loop) or ``dask`` (a cluster).

This module stays light: Dask is imported only when ``--executor dask`` asks for it.
"""

from __future__ import annotations

from astroingest._engine import Executor
from astroingest._exceptions import ConfigError

EXECUTORS = ("local", "dask")


def executor_for(
    name: str, scheduler: str | None, *, entry_points: bool, concurrency: int
) -> Executor | None:
    """The executor ``--executor NAME [--scheduler ADDRESS]`` asks for; None is the local one."""
    if name == "local":
        if scheduler is not None:
            raise ConfigError("--scheduler needs --executor dask")
        return None
    try:
        from astroingest._executors.client import DaskExecutor
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"--executor dask needs the dask extra (pip install 'astroingest[dask]'): "
            f"no module named {error.name!r}"
        ) from None
    return DaskExecutor(scheduler, entry_points=entry_points, concurrency=concurrency)
