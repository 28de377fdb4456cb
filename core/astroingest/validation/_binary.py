"""Binary validators: FITS, HDF5/HDF4/NetCDF, gzip, zip and a bare fallback."""

from __future__ import annotations

import re
import zlib
from math import prod

from astroingest.validation._base import Check, plural
from astroingest.validation._html import BodyValidator

_BLOCK = 2880
_CARD = 80
_MAX_HEADER_CARDS = 100_000
"""A header without END after 8 MB of cards is not a FITS header."""
_PRINTABLE = bytes(range(0x20, 0x7F))
_SIZE_KEYWORD = re.compile(rb"(?:BITPIX|NAXIS\d{0,3}|PCOUNT|GCOUNT|GROUPS)")

_HEADER, _SKIP, _STOP = range(3)


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _data_size(keywords: dict[bytes, bytes]) -> int | None:
    """Bytes of data after a header (FITS 4.0 eq. 2), or None if the keywords don't say."""
    try:
        bitpix = abs(int(keywords[b"BITPIX"]))
        naxis = int(keywords[b"NAXIS"])
        axes = [int(keywords[b"NAXIS%d" % n]) for n in range(1, naxis + 1)]
        pcount = int(keywords.get(b"PCOUNT", b"0"))
        gcount = int(keywords.get(b"GCOUNT", b"1"))
    except (KeyError, ValueError):
        return None
    if naxis == 0:
        return 0
    if keywords.get(b"GROUPS") == b"T" and axes[0] == 0:
        axes = axes[1:]  # random groups: NAXIS1 = 0 is a marker, not an axis
    size = bitpix * gcount * (pcount + prod(axes)) // 8
    return size if size >= 0 and min(axes, default=0) >= 0 else None


class FitsValidator(BodyValidator):
    """FITS: walks every HDU's header cards and skips its declared data."""

    name = "fits"

    def __init__(self) -> None:
        super().__init__()
        self._mode = _HEADER
        self._offset = 0
        self._card = bytearray()
        self._cards = 0
        self._hdu_start = 0
        self._keywords: dict[bytes, bytes] = {}
        self._hdus = 0
        self._data_end = 0
        self._skip_to = 0
        self._bad_cards = 0
        self._stopped: tuple[bool, str] | None = None

    def _consume(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        pos, n = 0, len(view)
        while pos < n and self._mode != _STOP:
            if self._mode == _SKIP:
                step = min(n - pos, self._skip_to - self._offset)
                pos, self._offset = pos + step, self._offset + step
                if self._offset == self._skip_to:
                    self._begin_header()
            else:
                take = min(n - pos, _CARD - len(self._card))
                self._card += view[pos : pos + take]
                pos, self._offset = pos + take, self._offset + take
                if len(self._card) == _CARD:
                    self._on_card(bytes(self._card))
                    self._card.clear()

    def _begin_header(self) -> None:
        self._mode, self._hdu_start, self._cards = _HEADER, self._offset, 0
        self._keywords.clear()

    def _stop(self, ok: bool, why: str) -> None:
        self._mode, self._stopped = _STOP, (ok, why)

    def _on_card(self, card: bytes) -> None:
        if self._cards == 0 and not card.startswith(b"XTENSION=" if self._hdus else b"SIMPLE  ="):
            if self._hdus:
                # FITS allows "special records" after the last HDU; they end the walk.
                self._stop(True, self._trailing())
            else:
                self._stop(False, "the primary header does not start with SIMPLE")
            return
        self._cards += 1
        if card.translate(None, _PRINTABLE):
            self._bad_cards += 1
        keyword = card[:8].rstrip()
        if keyword == b"END":
            self._end_header()
        elif card[8:10] == b"= " and _SIZE_KEYWORD.fullmatch(keyword):
            self._keywords[keyword] = card[10:].split(b"/", 1)[0].strip()
        if self._mode == _HEADER and self._cards >= _MAX_HEADER_CARDS:
            self._stop(False, f"no END card in the first {_MAX_HEADER_CARDS} cards")

    def _end_header(self) -> None:
        size = _data_size(self._keywords)
        if size is None:
            self._stop(False, f"HDU {self._hdus + 1} has unreadable BITPIX/NAXISn keywords")
            return
        self._hdus += 1
        header_end = self._hdu_start + _padded(self._cards * _CARD)
        self._data_end = header_end + size
        self._skip_to = header_end + _padded(size)
        self._mode = _SKIP

    def _trailing(self) -> str:
        return f"{plural(self._hdus, 'HDU')}, then non-HDU bytes from byte {self._hdu_start}"

    def _completeness(self) -> Check:
        if self._stopped is not None:
            ok, why = self._stopped
            return Check("complete", ok, why)
        if self._mode == _SKIP and self._offset < self._data_end:
            missing = self._data_end - self._offset
            detail = f"the body ends {missing} bytes before the end of HDU {self._hdus}'s data"
            return Check("complete", False, detail)
        if self._mode == _HEADER and (self._cards or self._card):
            partial = bytes(self._card[:9])
            if self._hdus and not self._cards and not b"XTENSION=".startswith(partial):
                return Check("complete", True, self._trailing())
            return Check("complete", False, f"the header of HDU {self._hdus + 1} is cut short")
        return Check("complete", True, plural(self._hdus, "HDU"))

    def _conclude(self) -> list[Check]:
        magic = self.head.startswith(b"SIMPLE  =")
        aligned = self.size > 0 and self.size % _BLOCK == 0
        return [
            Check("magic", magic, "" if magic else "no SIMPLE card first", critical=True),
            Check(
                "end_card",
                self._hdus > 0,
                "" if self._hdus else "no END card closes the primary header",
                critical=True,
            ),
            Check(
                "header_ascii",
                self._bad_cards == 0,
                f"{plural(self._bad_cards, 'header card')} with non-printable bytes"
                if self._bad_cards
                else "",
            ),
            self._completeness(),
            Check(
                "block_aligned",
                aligned,
                "" if aligned else f"{self.size} bytes is not a multiple of {_BLOCK}",
            ),
        ]


_HDF5 = b"\x89HDF\r\n\x1a\n"
_HDF5_OFFSETS = (0, 512, 1024, 2048)
_HDF4 = b"\x0e\x03\x13\x01"
_NETCDF = {b"CDF\x01": "NetCDF classic", b"CDF\x02": "NetCDF 64-bit offset", b"CDF\x05": "CDF-5"}


def _hdf5_signature(head: bytes) -> int | None:
    return next((at for at in _HDF5_OFFSETS if head[at : at + 8] == _HDF5), None)


def _hdf5_stored_eof(head: bytes, at: int) -> int | None:
    """The superblock's end-of-file address: a file shorter than this is truncated."""
    version = head[at + 8] if len(head) > at + 8 else -1
    if version in (0, 1):
        width, fields = head[at + 13 : at + 14], at + (24 if version == 0 else 28)
    elif version in (2, 3):
        width, fields = head[at + 9 : at + 10], at + 12
    else:
        return None
    size = width[0] if width else 0
    if size not in (2, 4, 8, 16) or len(head) < fields + 3 * size:
        return None
    # base address, then free-space (v0/1) or extension (v2/3) address, then end of file
    eof = int.from_bytes(head[fields + 2 * size : fields + 3 * size], "little")
    return None if eof == (1 << (8 * size)) - 1 else eof


class Hdf5Validator(BodyValidator):
    """HDF5 (so NetCDF-4), HDF4 and NetCDF classic files: one validator for the family.

    Registered once, as ``netcdf_hdf5``: a ``.nc`` file may be either NetCDF classic or
    NetCDF-4 (HDF5 inside), and ``.hdf`` is usually HDF4, so the extension can't pick.
    For HDF5 the superblock's end-of-file address also catches truncated downloads.
    """

    name = "netcdf_hdf5"

    def _consume(self, chunk: bytes) -> None:
        """The head kept by the base class holds everything this validator reads."""

    def _conclude(self) -> list[Check]:
        head = self.head
        at = _hdf5_signature(head)
        if at is None:
            fmt = _NETCDF.get(head[:4]) or ("HDF4" if head[:4] == _HDF4 else None)
            found = fmt is not None
            why = fmt if fmt is not None else "no HDF5, HDF4 or NetCDF signature"
            return [Check("magic", found, why, critical=True)]
        checks = [Check("magic", True, f"HDF5 signature at byte {at}", critical=True)]
        eof = _hdf5_stored_eof(head, at)
        if eof is not None:
            whole = self.size >= eof
            detail = f"{self.size} bytes, the superblock says {eof}"
            checks.append(Check("complete", whole, detail))
        return checks


_GZIP = b"\x1f\x8b"
_INFLATE_STEP = 1 << 20
"""Uncompressed bytes produced per call: output is counted and dropped, never held."""


class GzipValidator(BodyValidator):
    """gzip, inflated as it streams; every member's CRC-32 and length are verified."""

    name = "gzip"

    def __init__(self) -> None:
        super().__init__()
        self._inflater: zlib._Decompress | None = None
        self._gap = b""
        self._members = 0
        self._inflated = 0
        self._error: str | None = None
        self._junk = False

    def _consume(self, chunk: bytes) -> None:
        data = chunk
        while data and self._error is None and not self._junk:
            data = self._start_member(data) if self._inflater is None else self._inflate(data)

    def _start_member(self, data: bytes) -> bytes:
        # Like gzip(1) and Python's gzip module: zero padding may follow a member.
        data = (self._gap + data).lstrip(b"\0")
        self._gap = b""
        if len(data) < len(_GZIP) and _GZIP.startswith(data):
            self._gap = data
            return b""
        if not data.startswith(_GZIP):
            self._junk = True
            return b""
        self._inflater = zlib.decompressobj(wbits=31)
        return data

    def _inflate(self, data: bytes) -> bytes:
        inflater = self._inflater
        assert inflater is not None
        try:
            while True:
                out = inflater.decompress(data, _INFLATE_STEP)
                self._inflated += len(out)
                data = inflater.unconsumed_tail
                if inflater.eof or (not data and len(out) < _INFLATE_STEP):
                    break
        except zlib.error as exc:
            self._error = str(exc)
            return b""
        if not inflater.eof:
            return b""
        self._members += 1
        self._inflater = None
        return inflater.unused_data

    def _completeness(self) -> Check:
        if self._junk:
            where = f"after member {self._members}" if self._members else "at the start"
            return Check("complete", False, f"data that is not a gzip member {where}")
        if self._error is not None:
            return Check("complete", False, "inflating stopped at an error")
        if self._inflater is None and not self._gap and not self._members:
            return Check("complete", False, "no gzip member")
        if self._inflater is not None or self._gap:
            return Check("complete", False, f"the stream ends inside member {self._members + 1}")
        detail = f"{plural(self._members, 'member')}, {self._inflated} bytes uncompressed"
        return Check("complete", True, detail)

    def _conclude(self) -> list[Check]:
        magic = self.head.startswith(_GZIP)
        return [
            Check("magic", magic, "" if magic else "no gzip magic", critical=True),
            Check("inflates", self._error is None, self._error or "", critical=True),
            self._completeness(),
        ]


_ZIP_LOCAL = b"PK\x03\x04"
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_TAIL_SIZE = _EOCD_SIZE + 0xFFFF
"""The end-of-central-directory record, with the longest comment it may carry."""


class _Tail:
    """The last ``size`` bytes of a stream, trimmed lazily so appends stay cheap."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data = bytearray()

    def feed(self, chunk: bytes) -> None:
        if len(chunk) >= self._size:
            self._data = bytearray(chunk[-self._size :])
            return
        self._data += chunk
        if len(self._data) > 2 * self._size:
            del self._data[: -self._size]

    def bytes(self) -> bytes:
        return bytes(self._data[-self._size :])


def _end_record(tail: bytes, size: int) -> int | None:
    """Entries in the last plausible end-of-central-directory record, if there is one.

    Plausible: its comment fits in the body, and the central directory it points to
    ends before it (unless zip64 moved those fields elsewhere).
    """
    at = tail.rfind(_EOCD)
    while at != -1:
        record = tail[at : at + _EOCD_SIZE]
        if len(record) == _EOCD_SIZE:
            comment = int.from_bytes(record[20:22], "little")
            cd_size = int.from_bytes(record[12:16], "little")
            cd_offset = int.from_bytes(record[16:20], "little")
            start = size - len(tail) + at
            zip64 = 0xFFFFFFFF in (cd_size, cd_offset)
            if at + _EOCD_SIZE + comment <= len(tail) and (zip64 or cd_offset + cd_size <= start):
                return int.from_bytes(record[10:12], "little")
        at = tail.rfind(_EOCD, 0, at)
    return None


class ZipValidator(BodyValidator):
    """zip: a local header first and an end-of-central-directory record at the end."""

    name = "zip"

    def __init__(self) -> None:
        super().__init__()
        self._tail = _Tail(_TAIL_SIZE)

    def _consume(self, chunk: bytes) -> None:
        self._tail.feed(chunk)

    def _conclude(self) -> list[Check]:
        magic = self.head[:4] in (_ZIP_LOCAL, _EOCD)
        record = _end_record(self._tail.bytes(), self.size)
        found = record is not None
        detail = "no end-of-central-directory record"
        if record is not None:
            detail = "1 entry" if record == 1 else f"{record} entries"
        return [
            Check("magic", magic, "" if magic else "no zip local header", critical=True),
            Check("end_of_central_directory", found, detail),
        ]


class BinaryValidator(BodyValidator):
    """Anything else: not empty, and not an HTML page in disguise."""

    name = "binary"

    def _consume(self, chunk: bytes) -> None:
        """Nothing to parse: the base class's checks are all there is."""

    def _conclude(self) -> list[Check]:
        return []
