"""Validators keep bounded state: a 200 MiB CSV fits in a few MiB of traced memory."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Iterator

from tests.core.validation.conftest import check, validator

MIB = 1 << 20
HEADER = b"source_id,ra,dec,parallax,pmra,pmdec,phot_g_mean_mag,bp_rp,ruwe,designation\n"
ROW = (
    b"4583627001381815936,268.2317,-23.4567891,1.2345,-2.345,-4.567,17.2531,1.234,1.01,"
    b"Gaia DR3 4583627001381815936\n"
)


def _csv_chunks(window: bytes, total: int) -> Iterator[bytes]:
    """``total`` bytes of rows in 1 MiB chunks, cut mid-row, made on the fly."""
    # Slicing one window of rows at a shifting offset puts chunk edges inside rows.
    yield HEADER
    rows = total // len(ROW)
    sent = 0
    while sent < rows * len(ROW):
        offset = sent % len(ROW)
        size = min(MIB, rows * len(ROW) - sent)
        yield window[offset : offset + size]
        sent += size


def test_csv_of_200_mib_stays_under_8_mib() -> None:
    instance = validator("csv").factory()
    window = ROW * (MIB // len(ROW) + 2)  # test scaffolding: made before tracing starts
    tracemalloc.start()
    try:
        for chunk in _csv_chunks(window, 200 * MIB):
            instance.feed(chunk)
        report = instance.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.score == 1.0, report.failed()
    assert check(report, "data_rows").detail == f"{200 * MIB // len(ROW)} rows"
    assert peak < 8 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"


def _peak(name: str, chunks: Iterator[bytes]) -> tuple[float, int]:
    instance = validator(name).factory()
    tracemalloc.start()
    try:
        for chunk in chunks:
            instance.feed(chunk)
        report = instance.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return report.score, peak


def test_gzip_bomb_is_inflated_in_bounded_steps() -> None:
    # 64 MiB of zeros compress to ~64 KB; the inflated bytes are counted, never kept.
    body = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(body.compress(bytes(MIB)) for _ in range(64)) + body.flush()
    score, peak = _peak("gzip", iter([bomb]))
    assert score == 1.0
    assert peak < 8 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"


def test_votable_stream_text_is_not_accumulated() -> None:
    # A BINARY2 <STREAM> is one text node; a tree builder would hold all of it.
    head = (
        b'<?xml version="1.0"?><VOTABLE><RESOURCE><INFO name="QUERY_STATUS" value="OK"/>'
        b'<TABLE><FIELD name="x" datatype="double"/><DATA><BINARY2><STREAM encoding="base64">'
    )
    tail = b"</STREAM></BINARY2></DATA></TABLE></RESOURCE></VOTABLE>"
    base64_mib = b"QUJD" * (MIB // 4)

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(64):
            yield base64_mib
        yield tail

    score, peak = _peak("votable", chunks())
    assert score == 1.0
    assert peak < 8 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"
