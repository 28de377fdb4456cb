"""The cubes stage: bring each cube up to date with the raw assets the ledger knows.

For each ``[cubes.NAME]``: the ledger lists the assets of its ``from`` sources that its
converter takes; those not in the cube's manifest yet are converted and appended. When
an asset already in the cube has changed (another sha256), the cube is rebuilt from all
its inputs instead, in the same transaction. Either way one Icechunk commit makes the
new version visible, with its manifest; nothing new means no new version.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles

from astroingest._config import Config
from astroingest._exceptions import ConfigError
from astroingest._ledger import Ledger, LedgerRecord
from astroingest._ledger_sync import open_ledger
from astroingest._plugins import Host
from astroingest._retry import describe
from astroingest.cubes._converters import ConverterType, ConvertInput
from astroingest.cubes._repo import CubeLocation
from astroingest.cubes._spec import CubeSpec
from astroingest.cubes._writer import CubeWriter, Layout, OutOfOrder
from astroingest.stores._base import Store

log = logging.getLogger("astroingest")


@dataclass(slots=True)
class CubeResult:
    name: str
    status: str  # "committed", "unchanged" or "failed"
    version: int | None = None
    samples: int = 0  # added in this version
    inputs: int = 0  # assets converted in this version
    rebuilt: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "version": self.version,
            "samples": self.samples,
            "inputs": self.inputs,
            "rebuilt": self.rebuilt,
            "error": self.error,
        }


def select_cubes(config: Config, only: Sequence[str]) -> list[str]:
    unknown = [name for name in only if name not in config.cubes]
    if unknown:
        known = ", ".join(config.cubes) or "none"
        raise ConfigError(f"{config.path.name}: --only {unknown[0]}: no such cube (known: {known})")
    names = list(only) if only else list(config.cubes)
    return [n for n in names if config.cubes[n].enabled]


class CubeStage:
    def __init__(self, config: Config, host: Host, raw: Store, ledger: Ledger, run_id: str) -> None:
        self.config = config
        self.converters = host.converters()
        self.raw = raw
        self.ledger = ledger
        self.run_id = run_id

    async def build_all(self, names: Sequence[str]) -> list[CubeResult]:
        loop = asyncio.get_running_loop()
        results = []
        for name in names:
            try:
                # One thread per cube: zarr, Icechunk and the converter block, and the
                # local commit lock belongs to the thread that took it.
                results.append(await asyncio.to_thread(self.build, name, loop))
            except Exception as error:  # a converter is plugin code: report, go on
                message = describe(error)
                log.error("cube %s: %s", name, message)
                results.append(CubeResult(name, "failed", error=message))
        return results

    def build(self, name: str, loop: asyncio.AbstractEventLoop) -> CubeResult:
        spec = self.config.cubes[name]
        converter = self.converters[spec.converter]
        location = CubeLocation.join(
            self.config.store.cubes,
            name,
            endpoint_url=self.config.store.endpoint_url,
            region=self.config.store.region,
        )
        with CubeWriter(location, name, converter.name, _layout(spec, converter)) as writer:
            records = self._inputs(spec, converter)
            known = writer.previous.inputs if writer.previous else {}
            changed = [r for r in records if known.get(_name(r), r.sha256) != r.sha256]
            todo = records if changed else [r for r in records if _name(r) not in known]
            rebuilt = bool(changed)
            if changed:
                log.info("cube %s: %s changed; rebuilding from all inputs", name, _name(changed[0]))
                writer.clear()
            try:
                self._convert_all(todo, spec, converter, writer, loop)
            except OutOfOrder:
                if rebuilt:
                    raise
                log.info("cube %s: new inputs reach back before its end; rebuilding", name)
                writer.clear()
                todo, rebuilt = records, True
                self._convert_all(todo, spec, converter, writer, loop)
            inputs = {_name(r): r.sha256 for r in todo}
            provenance = {"run_id": self.run_id, "sources": list(spec.from_)}
            manifest = writer.commit(inputs, provenance)
        if manifest is None:
            version = writer.previous.version if writer.previous else None
            return CubeResult(name, "unchanged", version)
        log.info(
            "cube %s: version %d, %d new samples from %d inputs",
            name,
            manifest.version,
            writer.appended,
            len(todo),
        )
        return CubeResult(name, "committed", manifest.version, writer.appended, len(todo), rebuilt)

    def _inputs(self, spec: CubeSpec, converter: ConverterType) -> list[LedgerRecord]:
        records = [r for source in spec.from_ for r in self.ledger.records(source)]
        return sorted((r for r in records if converter.accepts(r.key)), key=_name)

    def _convert_all(
        self,
        records: list[LedgerRecord],
        spec: CubeSpec,
        converter: ConverterType,
        writer: CubeWriter,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        if converter.order is not None and len(records) > 1:
            order = converter.order
            keyed = []
            for record in records:
                with self._local(record, loop) as path:
                    keyed.append((order(path), _name(record), record))
            records = [record for *_, record in sorted(keyed, key=lambda k: k[:2])]
        for record in records:
            with self._local(record, loop) as path:
                item = ConvertInput(path, record.source, record.key, record.sha256, spec)
                converter.convert(item, writer)

    @contextmanager
    def _local(self, record: LedgerRecord, loop: asyncio.AbstractEventLoop) -> Iterator[Path]:
        """The asset as a local file: in place on a local store, else a temporary copy
        (converters read files; NetCDF needs to seek)."""
        key = _name(record)
        root = self.raw.local_root()
        if root is not None:
            yield root / key
            return
        with tempfile.TemporaryDirectory(prefix="astroingest-cube-") as tmp:
            path = Path(tmp) / Path(record.key).name
            asyncio.run_coroutine_threadsafe(self._download(key, path), loop).result()
            yield path

    async def _download(self, key: str, path: Path) -> None:
        async with aiofiles.open(path, "wb") as f:
            async for chunk in self.raw.read(key):
                await f.write(chunk)


def _name(record: LedgerRecord) -> str:
    return f"{record.source}/{record.key}"


def _layout(spec: CubeSpec, converter: ConverterType) -> Layout:
    return Layout(
        spec.sample_dim or converter.sample_dim,
        spec.chunks,
        spec.shards,
        spec.codec,
        spec.level,
        spec.window,
        spec.stride,
        tuple(converter.grows),
        converter.order is not None,
    )


async def build_cubes(
    config: Config,
    host: Host,
    names: Sequence[str],
    run_id: str,
    open_store: Callable[[str], Store],
) -> list[CubeResult]:
    """Bring the named cubes up to date from the raw store and the ledger."""
    raw = open_store(config.store.raw)
    logs = open_store(config.store.logs)
    try:
        ledger = await open_ledger(logs)
        try:
            return await CubeStage(config, host, raw, ledger, run_id).build_all(names)
        finally:
            ledger.close()
    finally:
        await raw.close()
        await logs.close()
