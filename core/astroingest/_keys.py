"""Turning untrusted remote names into store keys that cannot escape their prefix."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from astroingest._exceptions import UnsafeKeyError

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
MAX_SEGMENT = 180
MAX_KEY = 900


def sanitize_key(name: str) -> str:
    """A safe relative key: ``/``-separated segments of ``[A-Za-z0-9._=+-]``.

    Empty, ``.`` and ``..`` segments are dropped, leading dots are stripped (no hidden
    files, no ``..`` in disguise), over-long segments are shortened with a hash so two
    long names stay distinct.
    """
    normal = unicodedata.normalize("NFKC", name).replace("\\", "/")
    segments = [_clean_segment(s) for s in normal.split("/")]
    kept = [s for s in segments if s]
    if not kept:
        raise UnsafeKeyError(f"key {name!r} has no usable characters")
    key = "/".join(kept)
    if len(key) > MAX_KEY:
        raise UnsafeKeyError(f"key is longer than {MAX_KEY} characters: {key[:60]}…")
    return key


def _clean_segment(segment: str) -> str:
    if segment in ("", ".", ".."):
        return ""
    cleaned = _UNSAFE.sub("_", segment).lstrip(".")
    if len(cleaned) > MAX_SEGMENT:
        digest = hashlib.sha256(segment.encode()).hexdigest()[:12]
        cleaned = f"{cleaned[: MAX_SEGMENT - 13]}-{digest}"
    return cleaned
