"""The cubes stage: raw assets become versioned Zarr v3 cubes with a training manifest.

zarr, numpy and Icechunk are imported only when a cube is read or written (the cubes
extra: ``pip install 'astroingest[cubes]'``).
"""

from astroingest.cubes._converters import ConverterType, ConvertInput
from astroingest.cubes._manifest import Samples, TrainingManifest, VariableInfo
from astroingest.cubes._repo import CubeLocation, open_repository, read_manifest
from astroingest.cubes._spec import CubeSpec
from astroingest.cubes._stats import Stats
from astroingest.cubes._writer import Array, Batch, CubeError, CubeWriter, Layout, chunk_shape

__all__ = [
    "Array",
    "Batch",
    "ConvertInput",
    "ConverterType",
    "CubeError",
    "CubeLocation",
    "CubeSpec",
    "CubeWriter",
    "Layout",
    "Samples",
    "Stats",
    "TrainingManifest",
    "VariableInfo",
    "chunk_shape",
    "open_repository",
    "read_manifest",
]
