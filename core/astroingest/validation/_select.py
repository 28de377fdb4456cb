"""Picking the validator for one asset: by extension, then by media type."""

from __future__ import annotations

from collections.abc import Sequence

from astroingest.validation._base import ValidatorType

_VOTABLE = "application/x-votable+xml"
_REFINABLE = {
    "xml": lambda base: base.endswith(("/xml", "+xml")),
    "text": lambda base: base.startswith("text/"),
}
"""Generic types an extension may pick, and the media types that may refine them."""


def choose(types: Sequence[ValidatorType], media_type: str | None, key: str) -> ValidatorType:
    """The validator for an object stored under ``key`` and served as ``media_type``.

    The extension wins over the media type, because archives label files generically
    (``application/octet-stream``, ``text/plain``) far more often than they misname them:

    1. the longest registered extension that ends ``key`` (case-insensitive), so
       ``x.csv.gz`` is gzip, which is what its bytes are; ties go to the earlier type;
    2. the media type without parameters, except that ``content=…votable`` (as in
       ``text/xml;content=x-votable``) means a VOTable;
    3. a structured-syntax suffix: ``…+json`` is JSON, ``…+xml`` is XML, ``…+zip`` is zip;
    4. the type named ``text`` for any other ``text/*``;
    5. the type named ``binary``.

    One exception to the extension winning: a generic extension (``.xml``, ``.txt``…
    picking ``xml`` or ``text``) gives way to a media type that names a more specific
    format of the same kind, so ``result.xml`` served as ``application/x-votable+xml``
    gets its QUERY_STATUS checked, and ``table.txt`` served as ``text/csv`` its rows.
    """
    found = _by_extension(types, key)
    if media_type and (found is None or found.name in _REFINABLE):
        base = _normalize(media_type)
        by_media = _by_media_type(types, base)
        if found is None or (by_media is not None and _REFINABLE[found.name](base)):
            found = by_media or found
    if found is None:
        found = _named(types, "binary")
    if found is None:
        raise LookupError("no validator named 'binary' is registered to fall back on")
    return found


def _by_extension(types: Sequence[ValidatorType], key: str) -> ValidatorType | None:
    lowered = key.lower()
    best: ValidatorType | None = None
    best_length = 0
    for vt in types:
        for extension in vt.extensions:
            if len(extension) > best_length and lowered.endswith(extension.lower()):
                best, best_length = vt, len(extension)
    return best


def _normalize(media_type: str) -> str:
    base, _, parameters = media_type.partition(";")
    base = base.strip().lower()
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "content" and "votable" in value.lower():
            return _VOTABLE
    return base


def _by_media_type(types: Sequence[ValidatorType], base: str) -> ValidatorType | None:
    found = _listing(types, base)
    if found is None and "+" in base:
        found = _listing(types, "application/" + base.rsplit("+", 1)[1])
    if found is None and base.startswith("text/"):
        found = _named(types, "text")
    return found


def _listing(types: Sequence[ValidatorType], media_type: str) -> ValidatorType | None:
    for vt in types:
        if any(m.lower() == media_type for m in vt.media_types):
            return vt
    return None


def _named(types: Sequence[ValidatorType], name: str) -> ValidatorType | None:
    return next((vt for vt in types if vt.name == name), None)
