"""Subcommands a plugin adds to ``astroingest`` (through the ``astroingest_commands`` hook)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Command:
    """``astroingest <name>``: ``add_arguments`` fills its argparse parser; ``run`` gets the
    parsed arguments and returns the exit status (0 done, 1 failed, 2 usage or config
    error; a ``ConfigError`` it raises is reported as one line with status 2).

    Import heavy packages inside ``run``, not at module level: every ``astroingest``
    invocation, ``--help`` included, loads the plugins that register commands.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
