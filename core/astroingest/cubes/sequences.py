"""The ``sequences`` converter: FASTA and GenBank records into a flat, indexable group.

All residues go into one flat ``residues`` array (uint8 letter codes, along ``residue``);
each record gets its ``offset`` into it and its ``length``, plus ``id``, ``description``,
``organism`` and ``molecule`` (along ``record``). A trainer reads record ``i`` as
``residues[offset[i] : offset[i] + length[i]]`` without parsing any text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from astroingest.cubes._converters import ConverterType, ConvertInput
from astroingest.cubes._writer import Array, Batch, CubeError, CubeWriter

BATCH_RESIDUES = 4 * 1024 * 1024  # residues per batch, about one chunk


@dataclass(slots=True)
class Record:
    id: str
    description: str = ""
    organism: str = ""
    molecule: str = ""
    residues: list[bytes] = field(default_factory=list)


def convert(item: ConvertInput, writer: CubeWriter) -> None:
    records = _genbank(item.path) if _is_genbank(item.path) else _fasta(item.path)
    pending: list[Record] = []
    size = 0
    found = False
    for record in records:
        found = True
        pending.append(record)
        size += sum(map(len, record.residues))
        if size >= BATCH_RESIDUES:
            _append(writer, pending, item.name)
            pending, size = [], 0
    if pending:
        _append(writer, pending, item.name)
    if not found:
        raise CubeError(f"{item.name}: no FASTA or GenBank records")


def _append(writer: CubeWriter, records: list[Record], source: str) -> None:
    import numpy as np

    start = writer.length_of("residue")
    flat = [b"".join(r.residues) for r in records]
    lengths = np.array([len(f) for f in flat], dtype=np.int64)
    offsets = start + np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    residues = np.frombuffer(b"".join(flat), dtype=np.uint8)
    texts = {
        "id": [r.id for r in records],
        "description": [r.description for r in records],
        "organism": [r.organism for r in records],
        "molecule": [r.molecule for r in records],
        "source": [source] * len(records),
    }
    variables: dict[str, Array] = {
        "offset": Array(("record",), offsets, {"description": "start of the record in residues"}),
        "length": Array(("record",), lengths, {"units": "residues"}),
        **{k: Array(("record",), np.array(v, dtype=object)) for k, v in texts.items()},
        "residues": Array(("residue",), residues, {"encoding": "ASCII letter codes"}),
    }
    writer.append(Batch(variables))


def _is_genbank(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(5) == b"LOCUS"


def _fasta(path: Path) -> Iterator[Record]:
    record: Record | None = None
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.strip()
            if line.startswith(b">"):
                if record is not None:
                    yield record
                header = line[1:].decode("utf-8", "replace")
                ident, _, description = header.partition(" ")
                record = Record(ident, description)
            elif line and not line.startswith(b";"):
                if record is None:
                    raise CubeError(f"{path.name}: line {number}: sequence before any '>' header")
                record.residues.append(line.upper())
    if record is not None:
        yield record


def _genbank(path: Path) -> Iterator[Record]:
    record: Record | None = None
    section = ""
    definition: list[str] = []
    with path.open("rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            key = line[:12].strip()
            if line.startswith("LOCUS"):
                fields = line.split()
                record = Record(fields[1] if len(fields) > 1 else "", molecule=_molecule(fields))
                definition = []
            elif record is None:
                continue
            elif line.startswith("//"):
                record.description = " ".join(definition).strip()
                yield record
                record, section = None, ""
            elif section == "ORIGIN" and line.startswith(" "):
                record.residues.append("".join(line.split()[1:]).upper().encode())
            elif key and line[:3].strip() and not line[:3].strip().isdigit():
                section = key  # a keyword (column 0) or a sub-keyword (column 2, ORGANISM)
                _header(record, key, line[12:].strip(), definition)
            elif section == "DEFINITION":
                definition.append(line.strip())


def _header(record: Record, key: str, value: str, definition: list[str]) -> None:
    if key == "DEFINITION":
        definition.append(value)
    elif key == "VERSION" and value:
        record.id = value.split()[0]
    elif key == "ORGANISM":
        record.organism = value
    elif key == "ORIGIN":
        pass


def _molecule(fields: list[str]) -> str:
    known = ("DNA", "RNA", "mRNA", "rRNA", "tRNA", "ss-DNA", "ds-DNA", "aa")
    for value in fields:
        if value in known:
            return "protein" if value == "aa" else value
    return ""


SEQUENCES = ConverterType(
    "sequences",
    convert,
    extensions=(".fasta", ".fa", ".faa", ".fna", ".gb", ".gbk", ".gbwithparts", ".gp"),
    sample_dim="record",
    description="FASTA/GenBank: flat residues with per-record offsets and metadata",
    grows=("residue",),
)
