"""Spotting HTML pages, and the base every built-in validator shares.

Archives answer an expired token or a maintenance window with an HTML login or error page
and status 200. Whatever the asset claims to be, such a body must score 0, so every
built-in validator carries the critical ``not_html`` check from :class:`HtmlSniffer`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import ClassVar

from astroingest.validation._base import Check, QualityReport, report

HEAD_SIZE = 64 * 1024
"""Bytes of the body's start kept for sniffing: enough to get past a long XML prolog."""

_BOM = b"\xef\xbb\xbf"
_HTML_ROOTS = frozenset({b"html", b"head", b"body"})
# An optional namespace prefix, then the local name.
_ELEMENT = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")
_DOCTYPE = re.compile(rb"<!doctype\s+([a-z_][\w.\-:]*)", re.IGNORECASE)


def looks_like_html(head: bytes) -> bool:
    """Whether the start of a body is an HTML (or XHTML) page rather than data."""
    data = _skip_prolog(head.removeprefix(_BOM).lstrip())
    if data is None:
        return False
    doctype = _DOCTYPE.match(data)
    if doctype is not None:
        if doctype.group(1).lower() == b"html":
            return True
        after = _skip_doctype(data)
        data = _skip_prolog(after) if after is not None else None
        if data is None:
            return False
    element = _ELEMENT.match(data)
    return element is not None and element.group(1).lower() in _HTML_ROOTS


def _skip_prolog(data: bytes) -> bytes | None:
    """Drop XML declarations, processing instructions and comments; None if one is unclosed."""
    while True:
        if data.startswith(b"<?"):
            end, size = data.find(b"?>"), 2
        elif data.startswith(b"<!--"):
            end, size = data.find(b"-->", 4), 3
        else:
            return data
        if end == -1:
            return None
        data = data[end + size :].lstrip()


def _skip_doctype(data: bytes) -> bytes | None:
    # An internal subset may itself contain '>', so skip past its closing bracket first.
    close = data.find(b">")
    bracket = data.find(b"[")
    if bracket != -1 and bracket < close:
        subset_end = data.find(b"]", bracket)
        close = data.find(b">", subset_end) if subset_end != -1 else -1
    return None if close == -1 else data[close + 1 :].lstrip()


class HtmlSniffer:
    """Keeps the first :data:`HEAD_SIZE` bytes of a body and judges whether it is HTML."""

    def __init__(self) -> None:
        self._head = bytearray()

    def feed(self, chunk: bytes) -> None:
        missing = HEAD_SIZE - len(self._head)
        if missing > 0:
            self._head += chunk[:missing]

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    def check(self) -> Check:
        if looks_like_html(bytes(self._head)):
            return Check("not_html", False, "the body is an HTML page", critical=True)
        return Check("not_html", True, critical=True)


class BodyValidator(ABC):
    """Shared bookkeeping: size, head, and the ``not_html`` and ``non_empty`` checks.

    Subclasses set ``name`` and implement :meth:`_consume` (one chunk) and
    :meth:`_conclude` (their own checks, once, after the last chunk).
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self._sniffer = HtmlSniffer()
        self.size = 0

    @property
    def head(self) -> bytes:
        """The first :data:`HEAD_SIZE` bytes fed so far."""
        return self._sniffer.head

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        self._sniffer.feed(chunk)
        self._consume(chunk)

    def finish(self) -> QualityReport:
        checks = [
            self._sniffer.check(),
            Check("non_empty", self.size > 0, f"{self.size} bytes", critical=True),
        ]
        checks.extend(self._conclude())
        return report(self.name, checks)

    @abstractmethod
    def _consume(self, chunk: bytes) -> None: ...

    @abstractmethod
    def _conclude(self) -> list[Check]: ...
