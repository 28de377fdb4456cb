"""XML and VOTable, parsed incrementally with expat.

expat is driven directly rather than through ``ElementTree.XMLPullParser``: the tree
builder behind the pull parser keeps each element's whole text until the element ends,
and a VOTable ``<STREAM>`` is one base64 text node that can be gigabytes long. With
plain handlers the parser keeps only a depth counter, the root's name and, for
VOTables, a bounded slice of the QUERY_STATUS text.

Entity declarations are refused outright (the ``no_entities`` check): a data service
has no business declaring entities, and refusing them rules out billion-laughs expansion
wherever the DOCTYPE sits, not just in the first bytes. External DTDs are never fetched.
"""

from __future__ import annotations

from xml.parsers import expat

from astroingest.validation._base import Check, plural
from astroingest.validation._html import BodyValidator

_TEXT_CAP = 1000
"""Characters kept of a QUERY_STATUS INFO's text for the report."""


class _EntityDeclared(Exception):
    """Raised from the expat handler to abandon a body that declares entities."""


def _local(name: str) -> str:
    # With a namespace separator of " ", expat names are "uri local" or just "local".
    return name.rpartition(" ")[2]


def _refuse_entity(name: str, *_: object) -> None:
    raise _EntityDeclared(name)


class XmlValidator(BodyValidator):
    """Well-formed XML that declares no entities."""

    name = "xml"

    def __init__(self) -> None:
        super().__init__()
        self._parser = expat.ParserCreate(namespace_separator=" ")
        self._parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.EntityDeclHandler = _refuse_entity
        self._root: str | None = None
        self._elements = 0
        self._error: str | None = None
        self._entity: str | None = None

    def _consume(self, chunk: bytes) -> None:
        self._parse(chunk, final=False)

    def _parse(self, data: bytes, *, final: bool) -> None:
        if self._error is not None or self._entity is not None:
            return
        try:
            self._parser.Parse(data, final)
        except expat.ExpatError as exc:
            self._error = str(exc)
        except _EntityDeclared as exc:
            self._entity = str(exc)

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if self._root is None:
            self._root = local
        self._elements += 1
        self._started(local, attrs)

    def _end(self, name: str) -> None:
        self._ended(_local(name))

    def _started(self, local: str, attrs: dict[str, str]) -> None:
        """Hook for subclasses: an element opened."""

    def _ended(self, local: str) -> None:
        """Hook for subclasses: an element closed."""

    def _conclude(self) -> list[Check]:
        self._parse(b"", final=True)
        shape = f"root <{self._root}>, {plural(self._elements, 'element')}"
        entity = self._entity
        return [
            Check("well_formed", self._error is None, self._error or shape, critical=True),
            Check(
                "no_entities",
                entity is None,
                "" if entity is None else f"the DTD declares entity {entity!r}; refused",
                critical=True,
            ),
            *self._xml_checks(),
        ]

    def _xml_checks(self) -> list[Check]:
        return []


class VotableValidator(XmlValidator):
    """An IVOA VOTable whose QUERY_STATUS (if any) is not ERROR."""

    name = "votable"

    def __init__(self) -> None:
        super().__init__()
        self._tables = 0
        self._status_text: list[str] | None = None
        self._error_status: str | None = None
        self._overflow = False
        self._collected = 0

    def _started(self, local: str, attrs: dict[str, str]) -> None:
        if local == "TABLE":
            self._tables += 1
        elif local == "INFO" and attrs.get("name") == "QUERY_STATUS":
            value = attrs.get("value", "").strip().upper()
            self._overflow = self._overflow or value == "OVERFLOW"
            if value == "ERROR" and self._error_status is None:
                self._error_status = "ERROR"
                self._status_text, self._collected = [], 0
                self._parser.CharacterDataHandler = self._collect

    def _collect(self, data: str) -> None:
        assert self._status_text is not None
        room = _TEXT_CAP - self._collected
        if room > 0:
            self._status_text.append(data[:room])
            self._collected += min(room, len(data))

    def _ended(self, local: str) -> None:
        if local == "INFO" and self._status_text is not None:
            text = " ".join("".join(self._status_text).split())
            self._error_status = text or self._error_status
            self._status_text = None
            self._parser.CharacterDataHandler = None

    def _xml_checks(self) -> list[Check]:
        root = self._root
        return [
            Check("votable_root", root == "VOTABLE", f"root <{root}>", critical=True),
            Check(
                "query_status",
                self._error_status is None,
                self._error_status or "",
                critical=True,
            ),
            Check(
                "not_truncated",
                not self._overflow,
                "OVERFLOW: result truncated at the row limit" if self._overflow else "",
            ),
            Check("table", self._tables > 0, plural(self._tables, "table")),
        ]
