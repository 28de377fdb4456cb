"""JSON, checked incrementally with ijson's push parser (yajl when available)."""

from __future__ import annotations

import ijson

from astroingest.validation._base import Check, plural
from astroingest.validation._html import BodyValidator

_BOM = b"\xef\xbb\xbf"
_KINDS = {
    "start_map": "an object",
    "start_array": "an array",
    "string": "a string",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


class _TopLevel:
    """An ijson event sink that remembers only the top-level value's kind and size."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.members = 0
        self._depth = 0

    def send(self, item: tuple[str, object]) -> None:
        event = item[0]
        if self.kind is None:
            self.kind = event
        if event in ("end_map", "end_array"):
            self._depth -= 1
            return
        if self._depth == 1 and event != "map_key":
            self.members += 1
        if event in ("start_map", "start_array"):
            self._depth += 1


def _message(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class JsonValidator(BodyValidator):
    """One well-formed JSON document whose top level is an object or an array."""

    name = "json"

    def __init__(self) -> None:
        super().__init__()
        self._top = _TopLevel()
        self._parser = ijson.basic_parse_coro(self._top)
        self._lead = b""
        self._started = False
        self._error: str | None = None

    def _consume(self, chunk: bytes) -> None:
        if not self._started:
            # yajl rejects a UTF-8 BOM; hold back bytes until we know whether one is there.
            data = self._lead + chunk
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._lead = data
                return
            self._started = True
            chunk = data.removeprefix(_BOM)
        self._send(chunk)

    def _send(self, chunk: bytes) -> None:
        if self._error is not None or not chunk:
            return
        try:
            self._parser.send(chunk)
        except (ijson.JSONError, ValueError) as exc:
            self._error = _message(exc)

    def _conclude(self) -> list[Check]:
        if not self._started:
            self._send(self._lead)
        if self._error is None:
            try:
                self._parser.close()
            except (ijson.JSONError, ValueError) as exc:
                self._error = _message(exc)
        kind = _KINDS.get(self._top.kind or "", "nothing")
        container = self._top.kind in ("start_map", "start_array")
        shape = f"{kind} with {plural(self._top.members, 'member')}" if container else kind
        return [
            Check("well_formed", self._error is None, self._error or shape, critical=True),
            Check("top_level", container, f"the top level is {kind}"),
        ]
