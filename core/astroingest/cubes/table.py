"""The ``table`` converter: TAP results (VOTable, JSON, CSV/TSV) into a columnar group.

One 1-D array per column along ``row``, with the column's unit, UCD and description
from the VOTable FIELDs or the TAP JSON metadata. Null cells stay masked: every column
has a companion boolean array ``<name>_mask`` (true where the value is missing), and
float columns hold NaN there too. Rows are converted a block at a time.
"""

from __future__ import annotations

import csv
import json
import xml.parsers.expat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astroingest.cubes._converters import ConverterType, ConvertInput
from astroingest.cubes._writer import Array, Batch, CubeError, CubeWriter

BLOCK = 65_536  # rows per batch
_VOTABLE_TYPES = {
    "boolean": "bool",
    "bit": "bool",
    "unsignedByte": "uint8",
    "short": "int16",
    "int": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
    "char": "str",
    "unicodeChar": "str",
}


@dataclass(slots=True)
class Column:
    name: str
    dtype: str  # a numpy dtype name, or "str"
    attrs: dict[str, Any] = field(default_factory=dict)


Rows = Iterator[Sequence[str | None]]


def convert(item: ConvertInput, writer: CubeWriter) -> None:
    columns, rows = _reader(item.path)
    wanted = item.spec.variables
    if wanted is not None:
        missing = [w for w in wanted if w not in {c.name for c in columns}]
        if missing:
            raise CubeError(f"{item.name}: no column {missing[0]!r}")
    picks = [i for i, c in enumerate(columns) if wanted is None or c.name in wanted]
    block: list[Sequence[str | None]] = []
    for row in rows:
        if len(row) != len(columns):
            raise CubeError(f"{item.name}: a row has {len(row)} cells for {len(columns)} columns")
        block.append(row)
        if len(block) == BLOCK:
            writer.append(_batch(columns, picks, block, writer.layout.sample_dim))
            block = []
    if block:
        writer.append(_batch(columns, picks, block, writer.layout.sample_dim))


def _reader(path: Path) -> tuple[list[Column], Rows]:
    suffix = path.name.lower()
    if suffix.endswith((".xml", ".vot", ".votable")):
        return _votable(path)
    if suffix.endswith(".json"):
        return _tap_json(path)
    return _delimited(path, "\t" if suffix.endswith(".tsv") else ",")


def _batch(
    columns: list[Column], picks: list[int], block: list[Sequence[str | None]], dim: str
) -> Batch:
    variables: dict[str, Array] = {}
    for i in picks:
        column = columns[i]
        values, mask = _typed([row[i] for row in block], column.dtype)
        name = column.name.replace("/", "_")
        variables[name] = Array((dim,), values, {**column.attrs, "mask": f"{name}_mask"})
        variables[f"{name}_mask"] = Array((dim,), mask, {"mask_for": name})
    return Batch(variables)


def _typed(cells: list[str | None], dtype: str) -> tuple[Any, Any]:
    import numpy as np

    mask = np.array([c is None or c == "" for c in cells], dtype=bool)
    if dtype == "str":
        return np.array(["" if c is None else c for c in cells], dtype=object), mask
    if dtype == "bool":
        truth = {"true", "t", "1", "yes"}
        return np.array([(c or "").strip().lower() in truth for c in cells]), mask
    kind = np.dtype(dtype).kind
    filler = "nan" if kind == "f" else "0"
    text = [filler if m else str(c).strip() for c, m in zip(cells, mask, strict=True)]
    try:
        return np.array(text, dtype=np.float64 if kind == "f" else np.int64).astype(dtype), mask
    except ValueError as error:
        raise CubeError(f"a {dtype} column holds a value that is not one ({error})") from None


# -- CSV / TSV -------------------------------------------------------------------------


def _delimited(path: Path, delimiter: str) -> tuple[list[Column], Rows]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise CubeError(f"{path.name}: empty table (no header row)")
        kinds = ["int64"] * len(header)
        for row in reader:  # first pass: the narrowest type that holds every cell
            for i, cell in enumerate(row[: len(kinds)]):
                kinds[i] = _widen(kinds[i], cell)
    columns = [Column(name.strip(), kind) for name, kind in zip(header, kinds, strict=True)]

    def rows() -> Rows:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=delimiter)
            next(reader)
            yield from reader

    return columns, rows()


def _widen(kind: str, cell: str) -> str:
    cell = cell.strip()
    if not cell or kind == "str":
        return kind
    if kind == "int64":
        try:
            int(cell)
            return kind
        except ValueError:
            kind = "float64"
    try:
        float(cell)
        return kind
    except ValueError:
        return "str"


# -- TAP JSON (Gaia, ESA archives: {"metadata": [...], "data": [[...]]}) ---------------


def _tap_json(path: Path) -> tuple[list[Column], Rows]:
    with path.open(encoding="utf-8") as f:
        try:
            document = json.load(f)
        except ValueError as error:
            raise CubeError(f"{path.name}: not JSON ({error})") from None
    if not isinstance(document, dict) or "metadata" not in document or "data" not in document:
        raise CubeError(f"{path.name}: not a TAP JSON result (needs metadata and data)")
    columns = [
        _column(m["name"], m.get("datatype"), m.get("arraysize"), m) for m in document["metadata"]
    ]

    def rows() -> Rows:
        for row in document["data"]:
            yield [
                None if v is None else (json.dumps(v) if isinstance(v, list) else str(v))
                for v in row
            ]

    return columns, rows()


def _column(name: str, datatype: Any, arraysize: Any, meta: dict[str, Any]) -> Column:
    dtype = _VOTABLE_TYPES.get(str(datatype), "str")
    if arraysize not in (None, "", "1") and dtype != "str":
        dtype = "str"  # array-valued cells are kept as their text
    attrs = {k: str(meta[k]) for k in ("unit", "ucd", "description", "utype") if meta.get(k)}
    if datatype:
        attrs["votable_datatype"] = str(datatype)
    return Column(name, dtype, attrs)


# -- VOTable TABLEDATA -----------------------------------------------------------------


def _votable(path: Path) -> tuple[list[Column], Rows]:
    columns = _votable_fields(path)

    def rows() -> Rows:
        pending: list[list[str | None]] = []
        parser = _TableData(pending)
        with path.open("rb") as f:
            while chunk := f.read(1 << 16):
                parser.feed(chunk)
                yield from pending
                pending.clear()
        parser.close()
        yield from pending

    return columns, rows()


def _votable_fields(path: Path) -> list[Column]:
    fields: list[Column] = []
    description: list[str] | None = None
    current: dict[str, Any] = {}
    serialization: list[str] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal description, current
        tag = tag.rsplit(":", 1)[-1]
        if tag == "FIELD":
            current = dict(attrs)
        elif tag == "DESCRIPTION" and current:
            description = []
        elif tag in ("BINARY", "BINARY2", "FITS"):
            serialization.append(tag)

    def end(tag: str) -> None:
        nonlocal description, current
        tag = tag.rsplit(":", 1)[-1]
        if tag == "DESCRIPTION" and description is not None:
            current["description"] = "".join(description).strip()
            description = None
        elif tag == "FIELD" and current:
            fields.append(
                _column(
                    current.get("name", f"col{len(fields)}"),
                    current.get("datatype"),
                    current.get("arraysize"),
                    current,
                )
            )
            current = {}

    def text(data: str) -> None:
        if description is not None:
            description.append(data)

    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        with path.open("rb") as f:
            parser.ParseFile(f)
    except xml.parsers.expat.ExpatError as error:
        raise CubeError(f"{path.name}: not well-formed XML ({error})") from None
    if serialization:
        raise CubeError(
            f"{path.name}: VOTable {serialization[0]} serialization is not supported; "
            "ask the TAP service for TABLEDATA (RESPONSEFORMAT=votable/td)"
        )
    if not fields:
        raise CubeError(f"{path.name}: a VOTable without FIELDs")
    return fields


class _TableData:
    """Streams the TR/TD cells of a VOTable; a missing or empty TD is a null."""

    def __init__(self, out: list[list[str | None]]) -> None:
        self.out = out
        self.row: list[str | None] | None = None
        self.cell: list[str] | None = None
        self.parser = xml.parsers.expat.ParserCreate()
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._text

    def feed(self, chunk: bytes) -> None:
        self.parser.Parse(chunk, False)

    def close(self) -> None:
        self.parser.Parse(b"", True)

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        tag = tag.rsplit(":", 1)[-1]
        if tag == "TR":
            self.row = []
        elif tag == "TD" and self.row is not None:
            self.cell = []

    def _end(self, tag: str) -> None:
        tag = tag.rsplit(":", 1)[-1]
        if tag == "TD" and self.row is not None and self.cell is not None:
            value = "".join(self.cell)
            self.row.append(value if value.strip() else None)
            self.cell = None
        elif tag == "TR" and self.row is not None:
            self.out.append(self.row)
            self.row = None

    def _text(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


TABLE = ConverterType(
    "table",
    convert,
    extensions=(".csv", ".tsv", ".xml", ".vot", ".votable", ".json"),
    sample_dim="row",
    description="tabular TAP results (VOTable TABLEDATA, TAP JSON, CSV/TSV): one array per column",
)
