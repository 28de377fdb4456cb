"""The plugin host: built-ins by import, third parties by entry point, one typed facade."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pluggy

from astroingest import hookspecs
from astroingest._exceptions import PluginConflictError, PluginError
from astroingest._hosts import HostLimit
from astroingest._sources import SourceType
from astroingest._version import __version__
from astroingest.commands import Command
from astroingest.cubes._converters import ConverterType
from astroingest.stores._base import StoreType
from astroingest.validation._base import ValidatorType

if TYPE_CHECKING:
    from astroingest.doctor import DoctorCheck

log = logging.getLogger("astroingest")

ENTRY_POINT_GROUP = "astroingest"
DISABLE_ENV = "ASTROINGEST_DISABLE_PLUGINS"

# Core registers its own built-ins exactly like anyone else's plugins (as pytest does).
BUILTIN_PLUGINS: tuple[str, ...] = (
    "astroingest.stores.local",
    "astroingest.stores.s3",
    "astroingest.validation.builtin",
    "astroingest.cubes.builtin",
    "astroingest_plugins.http",
    "astroingest_plugins.files",
    "astroingest_plugins.hosts",
    "astroingest_plugins.tap",
    "astroingest_plugins.nasa.exoplanet_archive",
    "astroingest_plugins.nasa.cmr",
    "astroingest_plugins.ncbi",
    "astroingest_plugins.esa",
    "astroingest_plugins.eso",
    "astroingest_plugins.copernicus.cds",
    "astroingest_plugins.copernicus.cdse",
)


@dataclass(frozen=True, slots=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    builtin: bool


@dataclass(frozen=True, slots=True)
class BrokenPlugin:
    name: str
    distribution: str
    error: str


@dataclass(slots=True)
class Host:
    """The typed facade over ``pm.hook`` that the engine and CLI use."""

    pm: pluggy.PluginManager
    infos: dict[str, PluginInfo] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)

    def register(self, plugin: object, name: str | None = None, *, builtin: bool = False) -> str:
        registered = self.pm.register(plugin, name=name)
        if registered is None:
            raise PluginError(f"plugin {name!r} is blocked or already registered")
        dist = "astroingest" if builtin else _distribution_of(plugin)
        version = __version__ if builtin else _version_of(dist)
        self.infos[registered] = PluginInfo(registered, dist, version, builtin)
        return registered

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.infos.pop(name, None)

    def source_types(self) -> dict[str, SourceType[Any]]:
        return {n: t for n, (t, _) in self.source_types_by_plugin().items()}

    def source_types_by_plugin(self) -> dict[str, tuple[SourceType[Any], str]]:
        """Each source type with the name of the plugin that registered it."""
        return self._collect("astroingest_source_types", "source type", lambda t: t.name)

    def stores(self) -> dict[str, StoreType]:
        found: dict[str, tuple[StoreType, str]] = self._collect(
            "astroingest_stores", "store scheme", lambda t: t.scheme
        )
        return {n: t for n, (t, _) in found.items()}

    def validators(self) -> dict[str, ValidatorType]:
        found: dict[str, tuple[ValidatorType, str]] = self._collect(
            "astroingest_validators", "validator", lambda t: t.name
        )
        return {n: t for n, (t, _) in found.items()}

    def converters(self) -> dict[str, ConverterType]:
        found: dict[str, tuple[ConverterType, str]] = self._collect(
            "astroingest_converters", "cube converter", lambda t: t.name
        )
        return {n: t for n, (t, _) in found.items()}

    def host_limits(self) -> list[HostLimit]:
        return [limit for limits in self.pm.hook.astroingest_host_limits() for limit in limits]

    def doctor_checks(self) -> list[tuple[DoctorCheck, str]]:
        """Every plugin's doctor checks, each with the name of the plugin that gave it."""
        impls = self.pm.hook.astroingest_doctor_checks.get_hookimpls()
        return [(check, impl.plugin_name) for impl in impls for check in self._call(impl)]

    def commands(self) -> dict[str, Command]:
        found: dict[str, tuple[Command, str]] = self._collect(
            "astroingest_commands", "command", lambda c: c.name
        )
        return {n: c for n, (c, _) in found.items()}

    def hooks_of(self, name: str) -> list[str]:
        plugin = self.pm.get_plugin(name)
        callers = self.pm.get_hookcallers(plugin) or []
        return sorted(caller.name for caller in callers)

    def _collect(self, hook: str, kind: str, key: Callable[[T], str]) -> dict[str, tuple[T, str]]:
        found: dict[str, tuple[T, str]] = {}
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            for item in self._call(impl):
                name = key(item)
                if name in found:
                    first, second = self._describe(found[name][1]), self._describe(impl.plugin_name)
                    raise PluginConflictError(
                        f"{kind} {name!r} is registered twice: by {first} and by {second}"
                    )
                found[name] = (item, impl.plugin_name)
        return found

    def _call(self, impl: pluggy.HookImpl) -> list[Any]:
        info = self.infos.get(impl.plugin_name)
        if info is None or info.builtin:
            return list(cast(Iterable[Any], impl.function() or []))
        try:
            return list(cast(Iterable[Any], impl.function() or []))
        except Exception as error:  # reported and skipped, like a plugin that fails to import
            self.skip(impl.plugin_name, error)
            return []

    def skip(self, name: str, error: BaseException) -> None:
        info = self.infos.get(name)
        dist = info.distribution if info else "unknown"
        self.broken.append(BrokenPlugin(name, dist, f"{type(error).__name__}: {error}"))
        log.warning("skipping broken plugin %r from %s: %s", name, dist, error)
        if self.pm.get_plugin(name) is not None:
            self.unregister(name)

    def _describe(self, plugin_name: str) -> str:
        info = self.infos.get(plugin_name)
        if info is None:
            return f"plugin {plugin_name!r}"
        return f"{info.distribution} {info.version} (plugin {plugin_name!r})"


T = TypeVar("T")


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("astroingest")
    pm.add_hookspecs(hookspecs)
    return pm


def load_host(
    *,
    entry_points: bool = True,
    disabled: Iterable[str] = (),
    builtins: Sequence[str] = BUILTIN_PLUGINS,
) -> Host:
    """Built-ins first, then third-party plugins unless blocked.

    ``disabled`` and ``ASTROINGEST_DISABLE_PLUGINS`` (comma-separated names, or ``*``)
    block third-party plugins by entry-point name.
    """
    host = Host(new_plugin_manager())
    for module_path in builtins:
        host.register(importlib.import_module(module_path), module_path, builtin=True)
    blocked = {name.strip() for name in disabled if name.strip()}
    blocked |= {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    if entry_points and "*" not in blocked:
        for name in blocked:
            host.pm.set_blocked(name)
        _load_entry_points(host, blocked)
    host.pm.check_pending()
    return host


def _load_entry_points(host: Host, blocked: set[str]) -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in blocked or host.pm.get_plugin(ep.name) is not None:
            continue
        dist = ep.dist.name if ep.dist else "unknown"
        version = ep.dist.version if ep.dist else "unknown"
        host.infos[ep.name] = PluginInfo(ep.name, dist, version, builtin=False)
        try:
            host.pm.register(ep.load(), name=ep.name)
            host.pm.check_pending()  # built-ins passed already: a failure here is this plugin's
        except Exception as error:  # a third party's bug must not take the host down
            host.skip(ep.name, error)


def _distribution_of(plugin: object) -> str:
    module = plugin if isinstance(plugin, ModuleType) else None
    top = (module.__name__ if module else type(plugin).__module__).split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top)
    return dists[0] if dists else top


def _version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
