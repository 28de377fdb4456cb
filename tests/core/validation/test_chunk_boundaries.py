"""Property tests: chunk boundaries never change a report, and CSV agrees with the csv module."""

from __future__ import annotations

import csv
import gzip
import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.validation.conftest import (
    check,
    cut,
    fits_header,
    fixture,
    run,
    value_card,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BODIES = {
    "csv": fixture("eso/tap_obs_ist_apex_quicklooks_DERIVED_pandas.csv"),
    "json": fixture("esa/gaia_dr3_launch_job.json"),
    "votable": fixture("esa/gaia_job_1744351221317O-result_plain.votable.xml"),
    "genbank": fixture("ncbi/efetch_protein_16130152_gbwithparts.gb"),
    "gzip": gzip.compress(fixture("eso/tap_obs_ist_apex_quicklooks_DERIVED_pandas.csv")),
    "fits": fits_header(
        value_card("SIMPLE", "T"),
        value_card("BITPIX", "8"),
        value_card("NAXIS", "1"),
        value_card("NAXIS1", "100"),
    )
    + bytes(2880),
    "fasta": b">sp|P1|one\nMKVKVLSLLV\nPALLVAGAAN\n>sp|P2|two\nACGT-*\n\n",
}
WHOLE = {name: run(name, [body]) for name, body in BODIES.items()}


@FAST
@given(name=st.sampled_from(sorted(BODIES)), data=st.data())
def test_any_chunking_gives_the_same_report(name: str, data: st.DataObject) -> None:
    body = BODIES[name]
    boundaries = data.draw(st.lists(st.integers(0, len(body)), max_size=40))
    assert run(name, cut(body, boundaries)) == WHOLE[name]


# Fragments chosen to hit every parser state: quotes, escaped quotes, delimiters at
# field starts, CR, LF, CRLF and blank lines.
FRAGMENTS = ["a", "b", ",", '"', '""', "\n", "\r", "\r\n", ",,", ',"', '"\n', " ", "é"]


def _csv_module(text: str) -> tuple[int, int, int] | None:
    """(header width, data rows, ragged rows) as the stdlib csv module sees ``text``."""
    rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    if not rows:
        return None
    width = len(rows[0])
    return width, len(rows) - 1, sum(len(row) != width for row in rows[1:])


def _ours(body: bytes, boundaries: list[int]) -> tuple[int, int, int] | None:
    report = run("csv", cut(body, boundaries))
    header = check(report, "header")
    if not header.passed:
        return None
    ragged = check(report, "consistent_fields")
    return (
        int(header.detail.split()[0]),
        int(check(report, "data_rows").detail.split()[0]),
        0 if ragged.passed else int(ragged.detail.split()[0]),
    )


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
    data=st.data(),
)
def test_csv_counts_match_the_csv_module(text: str, data: st.DataObject) -> None:
    body = text.encode()
    boundaries = data.draw(st.lists(st.integers(0, len(body)), max_size=10))
    assert _ours(body, boundaries) == _csv_module(text)


@FAST
@given(rows=st.integers(1, 300), width=st.integers(1, 12), data=st.data())
def test_long_uniform_csv_in_random_chunks(rows: int, width: int, data: st.DataObject) -> None:
    # Big enough for the block fast path; blank lines and a CRLF mix keep it honest.
    lines = [",".join(f"r{r}c{c}" for c in range(width)) for r in range(rows + 1)]
    ragged = data.draw(st.integers(-1, rows))
    if ragged >= 0:
        lines[ragged] += ",extra"
    body = ("\r\n".join(lines[: rows // 2]) + "\n\n" + "\n".join(lines[rows // 2 :])).encode()
    boundaries = data.draw(st.lists(st.integers(0, len(body)), max_size=8))
    assert _ours(body, boundaries) == _csv_module(body.decode())
