"""Text validators: CSV, TSV, FASTA, GenBank flat files and generic text.

Each decodes UTF-8 incrementally and parses with a small state machine that keeps
only counters and, for line-oriented formats, the start of one unfinished line.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from operator import methodcaller
from typing import ClassVar

from astroingest.validation._base import Check, plural
from astroingest.validation._html import BodyValidator

_LINE_CAP = 4096
"""Characters kept of a line that spans chunks; only line starts matter to the parsers."""


class _Utf8:
    """Incremental UTF-8 decoding that yields the valid prefix, then stops at the first error."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._offset = 0
        self._started = False
        self.error: str | None = None

    def decode(self, chunk: bytes, final: bool = False) -> str:
        if self.error is not None:
            return ""
        pending = len(self._decoder.getstate()[0])
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            where = self._offset - pending + exc.start
            self.error = f"invalid UTF-8 at byte {where}: {exc.reason}"
            text = exc.object[: exc.start].decode("utf-8")
        self._offset += len(chunk)
        if not self._started and text:
            # A BOM is an encoding signature, not content.
            self._started = True
            text = text.removeprefix("\ufeff")
        return text

    def check(self) -> Check:
        return Check("utf8", self.error is None, self.error or "", critical=True)


class _TextValidator(BodyValidator):
    """Decodes the body and hands text pieces to :meth:`_text`."""

    def __init__(self) -> None:
        super().__init__()
        self._utf8 = _Utf8()

    def _consume(self, chunk: bytes) -> None:
        text = self._utf8.decode(chunk)
        if text:
            self._text(text)

    def _conclude(self) -> list[Check]:
        text = self._utf8.decode(b"", final=True)
        if text:
            self._text(text)
        return [self._utf8.check(), *self._text_checks()]

    def _text(self, text: str) -> None:
        """Parse one piece of decoded text; pieces split anywhere, even mid-line."""

    def _text_checks(self) -> list[Check]:
        return []


class TextValidator(_TextValidator):
    """Any text/* body, IPAC tables included: UTF-8, not empty, not an HTML page."""

    name = "text"


# Delimited-text parser states. They follow the csv module's default (lenient) dialect:
# a quote opens a quoted field only at the start of a field, "" inside one is a quote,
# and characters after a closing quote join the field.
_START_RECORD, _START_FIELD, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED, _AFTER_CR = range(6)
_NEWLINES = re.compile(r"\r\n?|\n")
_QUOTE_OR_NEWLINE = re.compile(r'["\r\n]')


class _DelimitedValidator(_TextValidator):
    delimiter: ClassVar[str]
    _noise: ClassVar[bytes]

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._noise = bytes(set(range(256)) - {ord(cls.delimiter), ord("\n")})

    def __init__(self) -> None:
        super().__init__()
        self._state = _START_RECORD
        self._delims = 0
        self._filled = False
        self._header: int | None = None
        self._rows = 0
        self._ragged = 0
        self._widths: tuple[int, int] | None = None
        self._unclosed = False

    def _text(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            if self._state == _START_RECORD and self._header is not None:
                i = self._bulk(text, i)
                if i == n:
                    return
            i = self._step(text, i)

    def _bulk(self, text: str, i: int) -> int:
        """Count whole quote-free lines at C speed; return where the slow path resumes."""
        quote = text.find('"', i)
        end = text.rfind("\n", i, len(text) if quote == -1 else quote)
        if end == -1:
            return i
        if not self._uniform(text, i, end):
            self._tally(text[i:end])
        return end + 1

    def _uniform(self, text: str, i: int, end: int) -> bool:
        """Count the lines of text[i:end] if all have the header's width, without splitting.

        Splitting makes one object per line, which would dominate the cost of big bodies.
        Instead, compare the block's skeleton (its delimiters and newlines) with the
        skeleton of that many well-formed rows.
        """
        assert self._header is not None
        if self._header == 1:
            return False  # every line's skeleton is "\n": blank lines would pass as rows
        block = text[i : end + 1]
        if block.count("\r") != block.count("\r\n"):
            return False  # bare CR line ends: leave them to the general path
        lines = block.count("\n")
        row = self.delimiter.encode() * (self._header - 1) + b"\n"
        if block.encode().translate(None, self._noise) != row * lines:
            return False
        self._records(self._header, lines)
        return True

    def _tally(self, block: str) -> None:
        lines = _NEWLINES.split(block) if "\r" in block else block.split("\n")
        widths = Counter(map(methodcaller("count", self.delimiter), lines))
        widths[0] -= lines.count("")  # blank lines are not records
        for delims, count in widths.items():
            if count:
                self._records(delims + 1, count)

    def _step(self, text: str, i: int) -> int:
        """Advance over one token (a quoted run, an unquoted run, or a separator)."""
        state = self._state
        if state == _QUOTED:
            j = text.find('"', i)
            if j == -1:
                return len(text)
            self._state = _QUOTE_IN_QUOTED
            return j + 1
        if state == _QUOTE_IN_QUOTED:
            if text[i] == '"':  # "" is an escaped quote
                self._state = _QUOTED
                return i + 1
            self._state = _UNQUOTED
            return i
        if state == _AFTER_CR:
            self._state = _START_RECORD
            return i + 1 if text[i] == "\n" else i
        return self._unquoted(text, i)

    def _unquoted(self, text: str, i: int) -> int:
        # Delimiters between quotes and line ends are only counted, so a row costs
        # one step per quote or line end rather than one per field.
        stop = _QUOTE_OR_NEWLINE.search(text, i)
        j = len(text) if stop is None else stop.start()
        if j > i:
            self._delims += text.count(self.delimiter, i, j)
            self._filled = True
            self._state = _START_FIELD if text[j - 1] == self.delimiter else _UNQUOTED
        if stop is None:
            return j
        if text[j] == '"':
            # Only a quote at the start of a field opens a quoted field.
            if self._state != _UNQUOTED:
                self._state, self._filled = _QUOTED, True
            return j + 1
        self._end_record()
        self._state = _AFTER_CR if text[j] == "\r" else _START_RECORD
        return j + 1

    def _end_record(self) -> None:
        if self._filled:
            self._records(self._delims + 1, 1)
        self._delims, self._filled = 0, False

    def _records(self, width: int, count: int) -> None:
        if self._header is None:
            self._header = width
            count -= 1
        self._rows += count
        if count and width != self._header:
            self._ragged += count
            low, high = self._widths or (width, width)
            self._widths = (min(low, width), max(high, width))

    def _text_checks(self) -> list[Check]:
        self._unclosed = self._state == _QUOTED
        if self._state not in (_START_RECORD, _AFTER_CR):
            self._end_record()
        header = self._header
        return [
            Check(
                "header",
                header is not None,
                plural(header, "field") if header is not None else "no header row",
                critical=True,
            ),
            Check("data_rows", self._rows > 0, plural(self._rows, "row")),
            Check("consistent_fields", self._ragged == 0, self._ragged_detail()),
            Check(
                "quotes_closed",
                not self._unclosed,
                "the body ends inside a quoted field" if self._unclosed else "",
            ),
        ]

    def _ragged_detail(self) -> str:
        if self._widths is None:
            return ""
        low, high = self._widths
        seen = str(low) if low == high else f"{low} to {high}"
        return (
            f"{self._ragged} of {plural(self._rows, 'row')} do not have the header's "
            f"{plural(self._header or 0, 'field')} (they have {seen})"
        )


class CsvValidator(_DelimitedValidator):
    """Comma-separated values with RFC 4180 quoting."""

    name = "csv"
    delimiter = ","


class TsvValidator(_DelimitedValidator):
    """Tab-separated values, quoted the way the csv module's excel-tab dialect writes them."""

    name = "tsv"
    delimiter = "\t"


# IUPAC nucleotide and amino-acid codes together cover every letter; '*' ends a
# protein, '-' is an alignment gap.
_NOT_RESIDUE = re.compile(r"[^A-Za-z*\-\s]")
_NON_SPACE = re.compile(r"\S")


class FastaValidator(_TextValidator):
    """FASTA: '>' header lines, each followed by residue lines."""

    name = "fasta"

    def __init__(self) -> None:
        super().__init__()
        self._in_header = False
        self._line_start = True
        self._records = 0
        self._empty = 0
        self._has_sequence = False
        self._preamble = False
        self._bad: str | None = None

    def _text(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            if self._in_header:
                j = text.find("\n", i)
                if j == -1:
                    return
                self._in_header, self._line_start = False, True
                i = j + 1
            elif self._line_start and text[i] == ">":
                self._start_record()
                i += 1
            else:
                # Everything up to the next header line is sequence: check it in one go.
                j = text.find("\n>", i)
                end = n if j == -1 else j + 1
                self._sequence(text[i:end])
                self._line_start = text[end - 1] == "\n"
                i = end

    def _start_record(self) -> None:
        self._close_record()
        self._records += 1
        self._has_sequence = False
        self._in_header, self._line_start = True, False

    def _close_record(self) -> None:
        if self._records and not self._has_sequence:
            self._empty += 1

    def _sequence(self, text: str) -> None:
        if not self._records:
            self._preamble = self._preamble or _NON_SPACE.search(text) is not None
            return
        if self._bad is None and (bad := _NOT_RESIDUE.search(text)) is not None:
            self._bad = f"{bad.group()!r} in record {self._records}"
        if not self._has_sequence:
            self._has_sequence = _NON_SPACE.search(text) is not None

    def _text_checks(self) -> list[Check]:
        self._close_record()
        starts = self._records > 0 and not self._preamble
        return [
            Check(
                "header_line",
                starts,
                "" if starts else "the first non-empty line does not start with '>'",
                critical=True,
            ),
            Check("alphabet", self._bad is None, self._bad or ""),
            Check("records", self._records > 0, plural(self._records, "record"), critical=True),
            Check(
                "no_empty_records",
                self._empty == 0,
                f"{plural(self._empty, 'record')} without sequence" if self._empty else "",
            ),
        ]


class _Lines:
    """Reassembles lines across chunks, keeping at most :data:`_LINE_CAP` characters of each."""

    def __init__(self) -> None:
        self._carry = ""
        self._dropping = False

    def push(self, text: str) -> str:
        """Complete lines (each ending in a newline) made available by ``text``."""
        last = text.rfind("\n")
        if last == -1:
            self._keep(text)
            return ""
        first = text.find("\n")
        head = self._carry if self._dropping else self._carry + text[:first]
        self._carry, self._dropping = "", False
        self._keep(text[last + 1 :])
        return head + text[first : last + 1]

    def flush(self) -> str:
        rest, self._carry, self._dropping = self._carry, "", False
        return rest

    def _keep(self, text: str) -> None:
        if self._dropping:
            return
        self._carry += text
        if len(self._carry) > _LINE_CAP:
            self._carry, self._dropping = self._carry[:_LINE_CAP], True


_GENBANK_KEYS = re.compile(r"^(?:(LOCUS|ORIGIN|CONTIG)\b|(//))", re.MULTILINE)


class GenbankValidator(_TextValidator):
    """GenBank flat files: LOCUS … ORIGIN/CONTIG … // records."""

    name = "genbank"

    def __init__(self) -> None:
        super().__init__()
        self._lines = _Lines()
        self._first: str | None = None
        self._last_is_end = False
        self._records = 0
        self._open = False
        self._has_sequence = False
        self._unterminated = 0
        self._no_sequence = 0

    def _text(self, text: str) -> None:
        block = self._lines.push(text)
        if block:
            self._block(block)

    def _block(self, block: str) -> None:
        stripped = block.strip()
        if not stripped:
            return
        if self._first is None:
            self._first = stripped[:5]
        self._last_is_end = stripped[stripped.rfind("\n") + 1 :].startswith("//")
        for match in _GENBANK_KEYS.finditer(block):
            self._keyword(match.group(1) or match.group(2))

    def _keyword(self, keyword: str) -> None:
        if keyword == "LOCUS":
            self._close(terminated=False)
            self._records += 1
            self._open, self._has_sequence = True, False
        elif keyword == "//":
            self._close(terminated=True)
        else:
            self._has_sequence = True

    def _close(self, *, terminated: bool) -> None:
        if not self._open:
            return
        self._open = False
        self._unterminated += not terminated
        self._no_sequence += not self._has_sequence

    def _text_checks(self) -> list[Check]:
        self._block(self._lines.flush())
        self._close(terminated=False)
        locus = self._first == "LOCUS"
        records_ok = self._records > 0 and self._unterminated == 0
        return [
            Check(
                "locus",
                locus,
                "" if locus else "the first non-empty line does not start with LOCUS",
                critical=True,
            ),
            Check(
                "sequence_section",
                self._records > 0 and self._no_sequence == 0,
                f"{plural(self._no_sequence, 'record')} without ORIGIN or CONTIG"
                if self._no_sequence
                else "",
            ),
            Check(
                "terminated",
                self._last_is_end,
                "" if self._last_is_end else "the last line is not //",
            ),
            Check(
                "records",
                records_ok,
                f"{plural(self._records, 'record')}, {self._unterminated} not closed by //",
            ),
        ]
