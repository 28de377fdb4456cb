"""astroingest: fetch scientific data from the big archives, verified, into an object store.

The public surface for plugin authors and scripts. Everything else lives in private
modules and may change. Importing this package is cheap: it never imports torch,
zarr, xarray or boto.
"""

from astroingest._assets import Asset, Conditions, Download, Opener
from astroingest._exceptions import (
    AstroingestError,
    ConfigError,
    FetchError,
    HTTPStatusError,
    IntegrityError,
    PluginConflictError,
    PluginError,
    RetryableError,
    StoreError,
    UnsafeKeyError,
    ValidationError,
)
from astroingest._hookimpl import hookimpl
from astroingest._hosts import HostLimit
from astroingest._http import PoliteClient
from astroingest._sources import PlanContext, SourceConfig, SourceType
from astroingest._version import __version__

__all__ = [
    "Asset",
    "AstroingestError",
    "Conditions",
    "ConfigError",
    "Download",
    "FetchError",
    "HTTPStatusError",
    "HostLimit",
    "IntegrityError",
    "Opener",
    "PlanContext",
    "PluginConflictError",
    "PluginError",
    "PoliteClient",
    "RetryableError",
    "SourceConfig",
    "SourceType",
    "StoreError",
    "UnsafeKeyError",
    "ValidationError",
    "__version__",
    "hookimpl",
]
