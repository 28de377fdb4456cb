"""Scrubbing secrets out of text and log records."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from astroingest import Asset, PlanContext, SourceConfig, SourceType, hookimpl
from astroingest._archive_server import ArchiveServer
from astroingest._redact import REDACTED, RedactingFilter, Redactor
from astroingest._report import RunReport


def test_redactor_scrubs_every_occurrence_of_every_secret() -> None:
    redact = Redactor(["s3cr3t-token", "hunter22"])
    text = "token=s3cr3t-token pw=hunter22 again s3cr3t-token, hunter22hunter22"
    assert redact(text) == f"token={REDACTED} pw={REDACTED} again {REDACTED}, {REDACTED}{REDACTED}"


def test_redactor_leaves_text_without_secrets_alone() -> None:
    redact = Redactor(["hunter22"])
    assert redact("nothing to see: hunter2 hunter") == "nothing to see: hunter2 hunter"


@pytest.mark.parametrize(
    "secrets", [["abcd", "abcdefgh"], ["abcdefgh", "abcd"]], ids=["short-first", "long-first"]
)
def test_redactor_scrubs_longest_secret_first(secrets: list[str]) -> None:
    # Scrubbing "abcd" first would leave "***efgh": half a secret in the log.
    redact = Redactor(secrets)
    assert redact("x abcdefgh y abcd z") == f"x {REDACTED} y {REDACTED} z"


def test_redactor_longest_first_holds_for_secrets_added_later() -> None:
    redact = Redactor(["abcd"])
    redact.add(["abcdefgh"])
    assert redact("abcdefgh") == REDACTED


def test_redactor_ignores_secrets_shorter_than_four_characters() -> None:
    redact = Redactor(["", "a", "ab", "abc", "wxyz"])
    assert redact.secrets == {"wxyz"}
    assert redact("a ab abc wxyz") == f"a ab abc {REDACTED}"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, Redactor]]:
    """A real logger with a stream handler behind a RedactingFilter."""
    redactor = Redactor(["hunter22"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    logger = logging.getLogger(f"astroingest-test-redact.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, redactor
    logger.removeHandler(handler)


def test_filter_scrubs_the_message(logged: tuple[logging.Logger, io.StringIO, Redactor]) -> None:
    logger, stream, _ = logged
    logger.warning("password hunter22 rejected")
    assert stream.getvalue() == f"WARNING password {REDACTED} rejected\n"


def test_filter_scrubs_percent_args(logged: tuple[logging.Logger, io.StringIO, Redactor]) -> None:
    logger, stream, _ = logged
    logger.info("fetching %s with %s (%d tries)", "https://x.org/?k=hunter22", "hunter22", 3)
    logger.info("%(user)s logged in with %(pw)s", {"user": "ana", "pw": "hunter22"})
    out = stream.getvalue()
    assert "hunter22" not in out
    assert out == (
        f"INFO fetching https://x.org/?k={REDACTED} with {REDACTED} (3 tries)\n"
        f"INFO ana logged in with {REDACTED}\n"
    )


def test_filter_sees_secrets_added_after_it_was_installed(
    logged: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    # The CLI installs the handler before the config (and its secrets) is loaded.
    logger, stream, redactor = logged
    redactor.add(["late-secret"])
    logger.info("value %s", "late-secret")
    assert stream.getvalue() == f"INFO value {REDACTED}\n"


def test_filter_passes_every_record() -> None:
    record = logging.makeLogRecord({"msg": "a %s b", "args": ("hunter22",), "levelno": 20})
    assert RedactingFilter(Redactor(["hunter22"])).filter(record) is True
    assert record.getMessage() == f"a {REDACTED} b"


def test_filter_scrubs_exception_text(
    logged: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    # ctx.log.exception(...) in a plugin: the traceback carries the exception's message.
    logger, stream, redactor = logged
    [secret] = redactor.secrets
    try:
        raise RuntimeError(f"GET https://archive.example.org/?api_key={secret} failed")
    except RuntimeError:
        logger.exception("index fetch failed")
    out = stream.getvalue()
    assert "index fetch failed" in out and "RuntimeError" in out
    assert secret not in out


def test_a_plan_can_register_a_secret_learned_at_run_time(
    local_archive: ArchiveServer,
    register_plugin: Callable[..., str],
    astroingest_run: Callable[..., RunReport],
) -> None:
    class TokenPlugin:
        @hookimpl
        def astroingest_source_types(self) -> list[SourceType[Any]]:
            async def plan(config: SourceConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
                token = "minted-at-run-time-7f3a"
                ctx.add_secret(token)
                yield Asset(url=local_archive.url(f"missing?{token}"), key="x.csv")

            return [SourceType("test.minted", SourceConfig, plan)]

    register_plugin(TokenPlugin(), "minted")
    report = astroingest_run('[sources.m]\nplugin = "test.minted"\n')
    [asset] = report.assets
    assert asset.status == "failed"
    assert "minted-at-run-time-7f3a" not in f"{asset.url} {asset.error}"
    assert "***" in (asset.url or "")


def test_secrets_are_scrubbed_percent_encoded_too() -> None:
    redact = Redactor(["jane.doe@example.org", "a b&c"])
    assert redact("?email=jane.doe%40example.org&q=a+b%26c") == f"?email={REDACTED}&q={REDACTED}"


def test_secrets_with_a_trailing_newline_are_scrubbed_as_errors_show_them() -> None:
    redact = Redactor(["s3cr3t-t0ken\n"])
    assert (
        redact("Illegal header value b'Bearer s3cr3t-t0ken\\n'")
        == f"Illegal header value b'Bearer {REDACTED}'"
    )
    assert redact("token s3cr3t-t0ken used") == f"token {REDACTED} used"


def test_provenance_is_scrubbed_value_by_value(
    local_archive: ArchiveServer,
    register_plugin: Callable[..., str],
    astroingest_run: Callable[..., RunReport],
) -> None:
    url = local_archive.add("t.csv", b"a,b\n1,2\n", content_type="text/csv")

    class ProvenancePlugin:
        @hookimpl
        def astroingest_source_types(self) -> list[SourceType[Any]]:
            async def plan(config: SourceConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
                ctx.add_secret("2024")  # a short secret that also appears inside a number
                yield Asset(
                    url=url,
                    key="t.csv",
                    provenance={"rows": 120240, "query": "year=2024", "ok": True},
                )

            return [SourceType("test.prov", SourceConfig, plan)]

    register_plugin(ProvenancePlugin(), "prov")
    report = astroingest_run('[sources.p]\nplugin = "test.prov"\n')
    [asset] = report.assets
    assert asset.status == "stored"
    assert asset.provenance == {"rows": 120240, "query": "year=***", "ok": True}
