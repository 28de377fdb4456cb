"""Helpers for the validator tests: feeding bodies in chunks, real fixtures, FITS cards."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path

from astroingest.validation import BUILTIN_VALIDATORS, Check, QualityReport, ValidatorType

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

CHUNK_SIZES: tuple[int | None, ...] = (None, 1, 7, 4096)
"""None feeds the body whole."""

HTML_LOGIN = b"""\xef\xbb\xbf
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Earthdata Login</title>
</head>
<body>
  <form action="/login" method="post">
    <input type="text" name="username"><input type="password" name="password">
    <button type="submit">Log in</button>
  </form>
</body>
</html>
"""


def fixture(relative: str) -> bytes:
    return (FIXTURES / relative).read_bytes()


def validator(name: str) -> ValidatorType:
    return next(vt for vt in BUILTIN_VALIDATORS if vt.name == name)


def split(body: bytes, size: int | None) -> list[bytes]:
    if size is None:
        return [body]
    return [body[i : i + size] for i in range(0, len(body), size)]


def cut(body: bytes, boundaries: Iterable[int]) -> list[bytes]:
    """The body split at the given offsets (any order, duplicates allowed)."""
    edges = [0, *sorted({b for b in boundaries if 0 < b < len(body)}), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


def run(name: str, chunks: Sequence[bytes]) -> QualityReport:
    instance = validator(name).factory()
    for chunk in chunks:
        instance.feed(chunk)
    return instance.finish()


def run_all_ways(name: str, body: bytes) -> QualityReport:
    """The report for ``body``, asserting it is the same however the body is chunked."""
    reports = [run(name, split(body, size)) for size in CHUNK_SIZES]
    for size, other in zip(CHUNK_SIZES[1:], reports[1:], strict=True):
        assert other == reports[0], f"{name}: {size}-byte chunks changed the report"
    return reports[0]


def check(report: QualityReport, name: str) -> Check:
    return next(c for c in report.checks if c.name == name)


def card(text: str) -> bytes:
    assert len(text) <= 80
    return text.ljust(80).encode("ascii")


def fits_header(*cards: str) -> bytes:
    """A FITS header: the cards, END, and blank padding to a 2880-byte block."""
    raw = b"".join(card(c) for c in cards) + card("END")
    return raw + b" " * (-len(raw) % 2880)


def value_card(keyword: str, value: str) -> str:
    """A fixed-format card: keyword in columns 1-8, '= ', value right-aligned to column 30."""
    return f"{keyword:<8}= {value:>20}"
