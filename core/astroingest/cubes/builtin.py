"""The built-in converters, registered like any plugin's."""

from __future__ import annotations

from astroingest._hookimpl import hookimpl
from astroingest.cubes._converters import ConverterType
from astroingest.cubes.grid import GRID
from astroingest.cubes.sequences import SEQUENCES
from astroingest.cubes.table import TABLE


@hookimpl
def astroingest_converters() -> list[ConverterType]:
    return [GRID, TABLE, SEQUENCES]
