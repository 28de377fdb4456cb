"""astroingest's training side: streams Zarr cubes into PyTorch (install the ``train`` extra).

This package is kept separate from ``astroingest`` so that the ingestion host never
imports torch.
"""

from astroingest._version import __version__

__all__ = ["__version__"]
