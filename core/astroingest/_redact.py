"""Scrubbing secrets out of anything a person or a file will see."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "***"
_MIN_SECRET = 4  # shorter values would scrub ordinary words and digits


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Add secrets; callable at any time (a token obtained mid-run).

        Each is also scrubbed as it appears percent-encoded in a URL (``@`` as ``%40``).
        """
        kept = {s for s in secrets if len(s) >= _MIN_SECRET}
        # Also as a value read from a file often arrives (trailing newline) and as an error
        # message shows it (escaped).
        kept |= {s.strip() for s in kept if len(s.strip()) >= _MIN_SECRET}
        kept |= {s.encode("unicode_escape").decode() for s in kept}
        self.secrets |= kept | {quote(s, safe="") for s in kept} | {quote_plus(s) for s in kept}
        # Longest first, so a secret containing another is scrubbed whole.
        self._ordered = sorted(self.secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


class RedactingFilter(logging.Filter):
    """Applies a Redactor to every record passing through a handler."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        if record.exc_info:
            # Handlers would print the traceback from exc_info, unscrubbed; hand them text.
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.redactor(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        return True
