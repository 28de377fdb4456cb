"""``plugin = "ncbi.eutils"``: esearch history, then efetch/esummary batches, through the engine.

NCBI is played by pytest-httpx at the real URLs (the engine's transport delegates to
httpx.AsyncHTTPTransport, which pytest-httpx patches) with the real payloads in
tests/fixtures/ncbi; the timing tests use a local ArchiveServer, whose request log
has timestamps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from pytest_httpx import HTTPXMock

from astroingest import FetchError
from astroingest._archive_server import ArchiveRequest, ArchiveServer, Reply
from astroingest._config import load_config
from astroingest._engine import Engine, RunOptions
from astroingest._exceptions import ConfigError
from astroingest._http import redact_url
from astroingest._plugins import Host
from astroingest._progress import LogProgress
from astroingest._redact import Redactor
from astroingest._report import RunReport
from astroingest_plugins.ncbi import (
    CITATION,
    EutilsConfig,
    output_format,
    parse_esearch,
    query_prefix,
)

Run = Callable[..., RunReport]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ncbi"
BASE = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils"
ESEARCH = f"{BASE}/esearch.fcgi"
EMAIL = "data-team@example.org"
API_KEY = "0123456789abcdef0123456789abcdef0123"
# The real NCBI host keeps its built-in 3 requests/s here only where a test measures it.
FAST = """
[defaults]
retries = 1
backoff = 0.01
max_backoff = 0.02
read_timeout = 5

[hosts."eutils.ncbi.nlm.nih.gov"]
connections = 8
rate = 1000.0
"""


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


PUBMED_SEARCH = fixture("esearch_pubmed_cancer_usehistory.xml")  # Count 42249, QueryKey 1
PUBMED_WEBENV = "MCID_6927d6e7fee3e90f880ec190"
PUBMED_ARTICLES = fixture("efetch_pubmed_12091962_9997_abstract.xml")
MEDGEN_SEARCH = fixture("esearch_medgen_OCRL_usehistory_EXTRACTED.xml")  # Count 5
MEDGEN_SUMMARY = fixture("esummary_medgen_336867_EXTRACTED.xml")
GENBANK = fixture("efetch_protein_16130152_gbwithparts.gb")
NOT_FOUND = fixture("esearch_protein_notfound.xml")


def with_count(count: int) -> bytes:
    """The real PubMed esearch answer with its Count edited (QueryKey and WebEnv kept)."""
    edited = PUBMED_SEARCH.replace(b"<Count>42249</Count>", f"<Count>{count}</Count>".encode())
    assert edited != PUBMED_SEARCH
    return edited


def cassette_headers(name: str) -> dict[str, str]:
    """The response headers recorded in a vcrpy cassette, minus the transfer-level ones.

    vcrpy stored the body already gunzipped, so content-encoding must not be replayed.
    """
    text = (FIXTURES / name).read_text()
    block = text.split("  response:\n", 1)[1].split("    headers:\n", 1)[1]
    block = block.split("    status:\n", 1)[0]
    pairs = re.findall(r"^      ([\w-]+):\n      - '?([^'\n]*)'?$", block, re.MULTILINE)
    skip = {"content-encoding", "transfer-encoding", "connection", "keep-alive", "set-cookie"}
    return {name: value for name, value in pairs if name.lower() not in skip}


ESEARCH_HEADERS = cassette_headers("vcr_cassette_esearch_medgen_OCRL.yaml")
XML_HEADERS = {"Content-Type": ESEARCH_HEADERS["Content-Type"]}  # text/xml; charset=UTF-8
TEXT_HEADERS = {"Content-Type": "text/plain; charset=UTF-8"}


def source(name: str = "lit", prelude: str = FAST, **keys: object) -> str:
    settings = {"db": "pubmed", "term": "cancer", "email": EMAIL, **keys}
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    body = "\n".join(lines)
    return f'{prelude}\n[sources.{name}]\nplugin = "ncbi.eutils"\n{body}\n'


def fetch_url(
    db: str,
    start: int,
    size: int,
    *,
    method: str = "efetch",
    webenv: str = PUBMED_WEBENV,
    tool: str = "astroingest",
    **extra: str,
) -> str:
    params = {
        "db": db,
        "query_key": "1",
        "WebEnv": webenv,
        "retstart": str(start),
        "retmax": str(size),
        **extra,
        "tool": tool,
        "email": EMAIL,
    }
    return f"{BASE}/{method}.fcgi?{urlencode(params)}"


def stored(tmp_path: Path, name: str) -> dict[str, bytes]:
    root = tmp_path / "astroingest-data" / "raw" / name
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".astroingest-pending" not in p.parts
    }


def form_of(request: httpx.Request) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(request.content.decode()).items()}


def query_of(request: httpx.Request) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(request.url.query.decode()).items()}


def prefix_for(**keys: object) -> str:
    """The key prefix of a source with ``keys`` (batch_size 500 unless given)."""
    return query_prefix(
        EutilsConfig.model_validate({"plugin": "ncbi.eutils", "email": EMAIL, **keys})
    )


def dry_run(host: Host, tmp_path: Path, text: str) -> RunReport:
    path = tmp_path / "sources.toml"
    path.write_text(textwrap.dedent(text))
    config = load_config(path, host)
    engine = Engine(config, host, LogProgress(), Redactor(config.secrets))
    return asyncio.run(engine.run(RunOptions(dry_run=True)))


# -- batches --------------------------------------------------------------------------------


def test_batches_cover_a_count_that_is_not_a_multiple_of_batch_size(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """Count edited from 42249 to 1234 in the real esearch answer: 500 + 500 + 234 records."""
    httpx_mock.add_response(
        url=ESEARCH, method="POST", content=with_count(1234), headers=ESEARCH_HEADERS
    )
    for start, size in [(0, 500), (500, 500), (1000, 234)]:
        httpx_mock.add_response(
            url=fetch_url("pubmed", start, size, retmode="xml"),
            content=PUBMED_ARTICLES,
            headers=XML_HEADERS,
        )

    report = astroingest_run(source(batch_size=500))

    assert report.status == "ok", [a.error for a in report.assets]
    prefix = prefix_for(db="pubmed", term="cancer")
    assert stored(tmp_path, "lit") == {
        f"{prefix}/00000000-00000499.xml": PUBMED_ARTICLES,
        f"{prefix}/00000500-00000999.xml": PUBMED_ARTICLES,
        f"{prefix}/00001000-00001499.xml": PUBMED_ARTICLES,
    }
    assert {a.validator for a in report.assets} == {"xml"}
    last = next(a for a in report.assets if a.key and a.key.endswith("00001499.xml"))
    assert last.provenance == {
        "provider": "NCBI E-utilities",
        "endpoint": f"{BASE}/efetch.fcgi",
        "db": "pubmed",
        "term": "cancer",
        "query_translation": parse_esearch(PUBMED_SEARCH, "pubmed").translation,
        "retmode": "xml",
        "count": 1234,
        "query_key": "1",
        "retstart": 1000,
        "retmax": 234,
        "records": [1001, 1234],
        "tool": "astroingest",
        "citation": CITATION,
        "documentation": "https://www.ncbi.nlm.nih.gov/books/NBK25499/",
    }
    search = form_of(httpx_mock.get_requests(method="POST")[0])
    assert search == {
        "db": "pubmed",
        "term": "cancer",
        "usehistory": "y",
        "retmax": "0",
        "retmode": "xml",
        "tool": "astroingest",
        "email": EMAIL,
    }


def test_max_records_stops_inside_a_batch(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    httpx_mock.add_response(url=ESEARCH, method="POST", content=PUBMED_SEARCH, headers=XML_HEADERS)
    for start, size in [(0, 500), (500, 200)]:
        httpx_mock.add_response(
            url=fetch_url("pubmed", start, size, rettype="abstract", retmode="xml"),
            content=PUBMED_ARTICLES,
            headers=XML_HEADERS,
        )

    report = astroingest_run(source(max_records=700, rettype="abstract"))

    assert report.status == "ok", [a.error for a in report.assets]
    assert sorted(k.split("/")[1] for k in stored(tmp_path, "lit")) == [
        "00000000-00000499.xml",
        "00000500-00000999.xml",
    ]
    assert {a.provenance["count"] for a in report.assets if a.provenance} == {42249}


def test_dry_run_lists_the_batches_without_fetching_any(
    httpx_mock: HTTPXMock,
    astroingest_host: Host,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The real search has 42249 records; PubMed lets the E-utilities reach only 9999 of them."""
    caplog.set_level(logging.INFO, logger="astroingest")
    httpx_mock.add_response(url=ESEARCH, method="POST", content=PUBMED_SEARCH, headers=XML_HEADERS)

    report = dry_run(astroingest_host, tmp_path, source(batch_size=4000))

    assert report.status == "dry-run"
    prefix = prefix_for(db="pubmed", term="cancer", batch_size=4000)
    assert [(a.key, a.status) for a in report.assets] == [
        (f"{prefix}/00000000-00003999.xml", "planned"),
        (f"{prefix}/00004000-00007999.xml", "planned"),
        (f"{prefix}/00008000-00011999.xml", "planned"),
    ]
    # The report shows the URL through the engine's redactor (which also hides query_key).
    assert report.assets[2].url == redact_url(fetch_url("pubmed", 8000, 1999, retmode="xml"))
    assert [r.url.path for r in httpx_mock.get_requests()] == ["/entrez/eutils/esearch.fcgi"]
    assert "first 9999 of the 42249 records" in caplog.text
    assert "dry run" in caplog.text
    assert not (tmp_path / "astroingest-data" / "raw").exists()


# -- NCBI's answers in 200 bodies -----------------------------------------------------------


def test_phrase_not_found_is_no_results_not_a_failure(
    httpx_mock: HTTPXMock, astroingest_run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="astroingest")
    httpx_mock.add_response(url=ESEARCH, method="POST", content=NOT_FOUND, headers=XML_HEADERS)

    report = astroingest_run(source(db="protein", term="abcXYZ"))

    assert report.status == "ok"
    assert report.assets == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["no results for term 'abcXYZ' in protein (phrase not found: abcXYZ)"]


def test_error_element_in_esearch_fails_the_source_with_its_text(
    httpx_mock: HTTPXMock, astroingest_run: Run
) -> None:
    """The real esearch answer with its result elements replaced by NCBI's <ERROR> shape."""
    body = re.sub(
        rb"<eSearchResult>.*</eSearchResult>",
        b"<eSearchResult><ERROR>Invalid db name specified: nucleotid</ERROR></eSearchResult>",
        PUBMED_SEARCH,
        flags=re.DOTALL,
    )
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8" ?>\n<!DOCTYPE eSearchResult')
    httpx_mock.add_response(url=ESEARCH, method="POST", content=body, headers=XML_HEADERS)

    report = astroingest_run(source(db="nucleotid"))

    assert report.status == "failed"
    [failure] = report.assets
    assert failure.status == "failed"
    assert failure.error == (
        "planning failed: NCBI esearch on nucleotid failed: Invalid db name specified: nucleotid"
    )


def test_efetch_error_document_fails_the_batch_and_is_not_stored(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """NCBI's efetch error shape (an <ERROR> in a 200 body); no recorded one exists, so it is
    written here after the documented shape, with the real esearch answer before it."""
    httpx_mock.add_response(url=ESEARCH, method="POST", content=with_count(3), headers=XML_HEADERS)
    error = (
        b'<?xml version="1.0" encoding="UTF-8" ?>\n'
        b'<!DOCTYPE eEfetchResult PUBLIC "-//NLM//DTD efetch 20131226//EN" '
        b'"https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20131226/efetch.dtd">\n'
        b"<eFetchResult>\n\t<ERROR>Cannot retrieve query from history</ERROR>\n</eFetchResult>\n"
    )
    # Once: the result set is gone from the history server, and no retry brings it back.
    httpx_mock.add_response(
        url=fetch_url("pubmed", 0, 3, retmode="xml"), content=error, headers=XML_HEADERS
    )

    report = astroingest_run(source())

    assert report.status == "failed"
    [failure] = report.assets
    assert failure.attempts == 1
    assert failure.error is not None
    assert "NCBI answered with an error instead of records: Cannot retrieve query from history" in (
        failure.error
    )
    assert "run the source again for a new search" in failure.error
    assert stored(tmp_path, "lit") == {}


def test_a_backend_error_document_is_retried(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """A passing backend failure (not a lost history) is worth another attempt."""
    httpx_mock.add_response(url=ESEARCH, method="POST", content=with_count(3), headers=XML_HEADERS)
    error = b"<eFetchResult>\n\t<ERROR>Search Backend failed: timeout</ERROR>\n</eFetchResult>\n"
    url = fetch_url("pubmed", 0, 3, retmode="xml")
    httpx_mock.add_response(url=url, content=error, headers=XML_HEADERS)
    httpx_mock.add_response(url=url, content=PUBMED_ARTICLES, headers=XML_HEADERS)

    report = astroingest_run(source())

    assert report.status == "ok", [a.error for a in report.assets]
    [batch] = report.assets
    assert batch.attempts == 2
    assert list(stored(tmp_path, "lit").values()) == [PUBMED_ARTICLES]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"header":{"type":"esummary","version":"0.3"},"error":"Unable to obtain query #1"}\n',
            "Unable to obtain query #1",
        ),
        (
            b'{"header":{"type":"esummary","version":"0.3"},'
            b'"esummaryresult":["Invalid query_key or WebEnv"]}',
            "Invalid query_key or WebEnv",
        ),
    ],
)
def test_json_error_document_with_status_200_fails_the_batch(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path, body: bytes, message: str
) -> None:
    """retmode json: NCBI's error object (200, application/json) is not stored as data."""
    httpx_mock.add_response(url=ESEARCH, method="POST", content=with_count(3), headers=XML_HEADERS)
    httpx_mock.add_response(
        url=fetch_url("pubmed", 0, 3, method="esummary", retmode="json"),
        content=body,
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )

    report = astroingest_run(source(method="esummary", retmode="json"))

    assert report.status == "failed"
    [failure] = report.assets
    assert failure.attempts == 1  # a lost history is permanent
    assert failure.error is not None
    assert f"NCBI answered with an error instead of records: {message}" in failure.error
    assert "run the source again" in failure.error
    assert stored(tmp_path, "lit") == {}


def test_http_400_on_esearch_with_an_api_key_says_to_check_it(
    httpx_mock: HTTPXMock, astroingest_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NCBI_API_KEY", API_KEY)
    httpx_mock.add_response(
        url=ESEARCH,
        method="POST",
        status_code=400,
        json={"error": "API key invalid", "api-key": API_KEY, "type": "api-key"},
    )

    report = astroingest_run(source(api_key="${NCBI_API_KEY}"))

    [failure] = report.assets
    assert failure.error == (
        f"planning failed: NCBI esearch on pubmed: HTTP 400 Bad Request for {ESEARCH} (check api_key)"
    )
    assert API_KEY not in report.to_json()


def test_unsafe_xml_is_refused() -> None:
    bomb = b'<!DOCTYPE eSearchResult [<!ENTITY a "aaaaaaaaaa">]><eSearchResult><Count>&a;</Count></eSearchResult>'
    with pytest.raises(FetchError, match="refused a response that declares XML entities"):
        parse_esearch(bomb, "pubmed")
    with pytest.raises(FetchError, match="not well-formed XML"):
        parse_esearch(PUBMED_SEARCH[:200], "pubmed")


# -- tool, email, api_key -------------------------------------------------------------------


def test_tool_email_and_api_key_go_with_every_request_and_the_key_nowhere_else(
    httpx_mock: HTTPXMock,
    astroingest_run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="astroingest")
    monkeypatch.setenv("NCBI_API_KEY", API_KEY)
    httpx_mock.add_response(url=ESEARCH, method="POST", content=with_count(5), headers=XML_HEADERS)
    for start, size in [(0, 2), (2, 2), (4, 1)]:
        httpx_mock.add_response(
            url=fetch_url(
                "protein",
                start,
                size,
                tool="porin-survey",
                rettype="gbwithparts",
                retmode="text",
                api_key=API_KEY,
            ),
            content=GENBANK,
            headers=TEXT_HEADERS,
        )

    report = astroingest_run(
        source(
            db="protein",
            term="16130152[uid]",
            rettype="gbwithparts",
            retmode="text",
            batch_size=2,
            tool="porin-survey",
            sort="relevance",
            datetype="mdat",
            mindate="2013/01/01",
            maxdate="2013/12/31",
            api_key="${NCBI_API_KEY}",
        )
    )

    assert report.status == "ok", [a.error for a in report.assets]
    search, *fetches = httpx_mock.get_requests()
    assert form_of(search) == {
        "db": "protein",
        "term": "16130152[uid]",
        "usehistory": "y",
        "retmax": "0",
        "retmode": "xml",
        "datetype": "mdat",
        "mindate": "2013/01/01",
        "maxdate": "2013/12/31",
        "sort": "relevance",
        "tool": "porin-survey",
        "email": EMAIL,
        "api_key": API_KEY,
    }
    assert len(fetches) == 3
    for fetch in fetches:
        params = query_of(fetch)
        assert (params["tool"], params["email"], params["api_key"]) == (
            "porin-survey",
            EMAIL,
            API_KEY,
        )
    # GenBank text batches: a .gb key, so the GenBank validator reads them.
    assert {a.validator for a in report.assets} == {"genbank"}
    assert {a.quality for a in report.assets} == {1.0}
    assert all(k.endswith(".gb") for k in stored(tmp_path, "lit"))
    # The key is scrubbed by the URL redactor (a param named like a key), not just by value.
    assert all("api_key=REDACTED" in (a.url or "") for a in report.assets)
    assert API_KEY not in report.to_json()
    # httpx's own INFO lines carry full URLs: the CLI leaves that logger unconfigured (so
    # silent); astroingest's loggers must never see the key.
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("astroingest")]
    assert ours and not any(API_KEY in line for line in ours)
    data = tmp_path / "astroingest-data"
    with sqlite3.connect(data / "logs" / "ledger.sqlite") as db:
        assert API_KEY not in repr(db.execute("SELECT * FROM assets").fetchall())
    assert not any(API_KEY in p.as_posix() for p in data.rglob("*"))


def test_keys_are_stable_across_runs_although_the_webenv_changes(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """The second esearch answer is the real one with another WebEnv, as every new search has."""
    new_webenv = "MCID_0000000000000000000000aa"
    second = with_count(2).replace(PUBMED_WEBENV.encode(), new_webenv.encode())
    for body, webenv in [(with_count(2), PUBMED_WEBENV), (second, new_webenv)]:
        httpx_mock.add_response(url=ESEARCH, method="POST", content=body, headers=XML_HEADERS)
        httpx_mock.add_response(
            url=fetch_url("pubmed", 0, 2, webenv=webenv, retmode="xml"),
            content=PUBMED_ARTICLES,
            headers=XML_HEADERS,
        )

    first = astroingest_run(source())
    again = astroingest_run(source())

    assert [(a.key, a.status) for a in first.assets] == [
        (f"{prefix_for(db='pubmed', term='cancer')}/00000000-00000499.xml", "stored")
    ]
    assert [(a.key, a.status) for a in again.assets] == [(first.assets[0].key, "unchanged")]
    assert new_webenv in (again.assets[0].url or "")
    assert len(stored(tmp_path, "lit")) == 1


def test_a_growing_count_refetches_the_last_batch_under_the_same_key(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """3 records in batches of 2, then 4: the second batch keeps its key and is replaced."""
    for count in (3, 4):
        httpx_mock.add_response(
            url=ESEARCH, method="POST", content=with_count(count), headers=XML_HEADERS
        )
        httpx_mock.add_response(
            url=fetch_url("pubmed", 0, 2, retmode="xml"),
            content=PUBMED_ARTICLES,
            headers=XML_HEADERS,
        )
        httpx_mock.add_response(
            url=fetch_url("pubmed", 2, count - 2, retmode="xml"),
            content=PUBMED_ARTICLES + f"<!-- {count} -->".encode(),
            headers=XML_HEADERS,
        )

    first = astroingest_run(source(batch_size=2))
    again = astroingest_run(source(batch_size=2))

    prefix = prefix_for(db="pubmed", term="cancer", batch_size=2)
    keys = [f"{prefix}/00000000-00000001.xml", f"{prefix}/00000002-00000003.xml"]
    assert sorted((a.key or "", a.status) for a in first.assets) == [(k, "stored") for k in keys]
    assert sorted((a.key or "", a.status) for a in again.assets) == [
        (keys[0], "unchanged"),
        (keys[1], "stored"),
    ]
    assert stored(tmp_path, "lit") == {
        keys[0]: PUBMED_ARTICLES,
        keys[1]: PUBMED_ARTICLES + b"<!-- 4 -->",
    }


def test_query_prefix_follows_the_query() -> None:
    config = EutilsConfig.model_validate(
        {"plugin": "ncbi.eutils", "db": "pubmed", "term": "cancer", "email": EMAIL}
    )
    assert query_prefix(config) == query_prefix(config.model_copy())
    assert query_prefix(config).startswith("pubmed-")
    for change in [
        {"term": "cancer AND 2020[pdat]"},
        {"rettype": "medline"},
        {"method": "esummary"},
        {"reldate": 30},
        # Batches of another size would overlap these ones side by side.
        {"batch_size": 20},
    ]:
        assert query_prefix(config.model_copy(update=change)) != query_prefix(config), change
    # Credentials and contact details do not move the files.
    for same in [{"api_key": API_KEY}, {"email": "x@y.org"}, {"tool": "other"}]:
        assert query_prefix(config.model_copy(update=same)) == query_prefix(config), same


@pytest.mark.parametrize(
    ("method", "rettype", "retmode", "expected"),
    [
        ("efetch", None, "xml", ("xml", "text/xml")),
        ("efetch", "gb", "xml", ("xml", "text/xml")),
        ("efetch", "fasta", "text", ("fasta", "text/plain")),
        ("efetch", "gbwithparts", "text", ("gb", "text/plain")),
        ("efetch", "gp", "text", ("gb", "text/plain")),
        ("efetch", "medline", "text", ("txt", "text/plain")),
        ("efetch", None, "asn.1", ("asn1", "text/plain")),
        ("esummary", None, "json", ("json", "application/json")),
    ],
)
def test_output_format_picks_an_extension_the_validators_know(
    method: str, rettype: str | None, retmode: str, expected: tuple[str, str]
) -> None:
    config = EutilsConfig.model_validate(
        {
            "plugin": "ncbi.eutils",
            "db": "protein",
            "term": "x",
            "email": EMAIL,
            "method": method,
            "rettype": rettype,
            "retmode": retmode,
        }
    )
    assert output_format(config) == expected


# -- esummary -------------------------------------------------------------------------------


def test_esummary_batches_with_the_recorded_medgen_search(
    httpx_mock: HTTPXMock, astroingest_run: Run, tmp_path: Path
) -> None:
    """esearch medgen "OCRL" (5 records, served with its recorded headers), then esummary."""
    httpx_mock.add_response(
        url=ESEARCH, method="POST", content=MEDGEN_SEARCH, headers=ESEARCH_HEADERS
    )
    for start, size in [(0, 4), (4, 1)]:
        httpx_mock.add_response(
            url=fetch_url(
                "medgen",
                start,
                size,
                method="esummary",
                webenv="MCID_66198254cf40a865a76b5e71",
                retmode="xml",
            ),
            content=MEDGEN_SUMMARY,
            headers=XML_HEADERS,
        )

    report = astroingest_run(source(db="medgen", term="OCRL", method="esummary", batch_size=4))

    assert report.status == "ok", [a.error for a in report.assets]
    prefix = prefix_for(db="medgen", term="OCRL", method="esummary", batch_size=4)
    assert stored(tmp_path, "lit") == {
        f"{prefix}/00000000-00000003.xml": MEDGEN_SUMMARY,
        f"{prefix}/00000004-00000007.xml": MEDGEN_SUMMARY,
    }
    assert {a.provenance["endpoint"] for a in report.assets if a.provenance} == {
        f"{BASE}/esummary.fcgi"
    }
    assert ESEARCH_HEADERS["X-RateLimit-Limit"] == "3"  # the cassette's real headers were served


# -- politeness: host budget and 429 ---------------------------------------------------------


def serve_ncbi(archive: ArchiveServer, count: int) -> str:
    """Routes for esearch (the real answer, Count edited) and efetch (the real GenBank record)."""

    def search(request: ArchiveRequest) -> Reply:
        return Reply(200, with_count(count), "text/xml; charset=UTF-8")

    def fetch(request: ArchiveRequest) -> Reply:
        if request.params.get("WebEnv") != PUBMED_WEBENV or "email" not in request.params:
            return Reply(400, b"bad request", "text/plain")
        return Reply(200, GENBANK, "text/plain; charset=UTF-8")

    archive.route("/entrez/eutils/esearch.fcgi", search, methods=["POST"])
    archive.route("/entrez/eutils/efetch.fcgi", fetch, methods=["GET"])
    return archive.url("/entrez/eutils")


def local_source(base: str, *, api_key: str | None, backoff: float = 0.01, **keys: object) -> str:
    prelude = f"[defaults]\nretries = 2\nbackoff = {backoff}\nmax_backoff = 1\n"
    extra = {"api_key": api_key} if api_key else {}
    return source(
        prelude=prelude,
        db="protein",
        term="porin",
        rettype="gbwithparts",
        retmode="text",
        batch_size=1,
        base_url=base,
        **extra,
        **keys,
    )


def gaps(archive: ArchiveServer) -> list[float]:
    times = [r.time for r in archive.requests()]
    return [b - a for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize(("api_key", "low", "high"), [(API_KEY, 0.08, 0.25), (None, 0.3, 0.5)])
def test_an_api_key_raises_the_host_rate_from_3_to_10_per_second(
    local_archive: ArchiveServer,
    astroingest_run: Run,
    api_key: str | None,
    low: float,
    high: float,
) -> None:
    base = serve_ncbi(local_archive, count=5)

    report = astroingest_run(local_source(base, api_key=api_key))

    assert report.status == "ok", [a.error for a in report.assets]
    spacing = gaps(local_archive)
    assert len(spacing) == 5  # esearch + 5 efetch
    assert min(spacing) >= low * 0.9, spacing
    assert sum(spacing) / len(spacing) <= high, spacing


def test_a_keyed_source_does_not_speed_up_a_keyless_one_on_the_same_host(
    local_archive: ArchiveServer, astroingest_run: Run
) -> None:
    """The key raises the shared host budget to 10/s; the keyless source stays at 3/s."""
    base = serve_ncbi(local_archive, count=6)
    keyed = local_source(base, api_key=API_KEY)
    keyless = local_source(base, api_key=None)
    text = keyed + keyless.split("\n[sources.lit]", 1)[1].join(["\n[sources.free]", ""])

    report = astroingest_run(text)

    assert report.status == "ok", [a.error for a in report.assets]
    assert len(report.assets) == 12
    fetches = [r for r in local_archive.requests() if r.path.endswith("/efetch.fcgi")]
    keyed_times = [r.time for r in fetches if "api_key=" in r.query]
    keyless_times = [r.time for r in fetches if "api_key=" not in r.query]
    assert len(keyed_times) == len(keyless_times) == 6
    keyless_gaps = [b - a for a, b in itertools.pairwise(keyless_times)]
    keyed_gaps = [b - a for a, b in itertools.pairwise(keyed_times)]
    assert min(keyless_gaps) >= 0.3, keyless_gaps  # 3/s, however fast the host allows
    assert sum(keyed_gaps) / len(keyed_gaps) <= 0.25, keyed_gaps  # the key's 10/s


def test_429_without_retry_after_is_retried_after_a_backoff(
    local_archive: ArchiveServer, astroingest_run: Run
) -> None:
    """NCBI documents no Retry-After on 429: the engine's own backoff (0.3 s here) applies."""
    base = serve_ncbi(local_archive, count=1)
    local_archive.fault("/entrez/eutils/esearch.fcgi", "429")
    local_archive.fault("/entrez/eutils/efetch.fcgi", "429")

    report = astroingest_run(local_source(base, api_key=API_KEY, backoff=0.3))

    assert report.status == "ok", [a.error for a in report.assets]
    [batch] = report.assets
    assert batch.attempts == 2
    records = local_archive.requests()
    assert [(r.path.rsplit("/", 1)[1], r.status) for r in records] == [
        ("esearch.fcgi", 429),
        ("esearch.fcgi", 200),
        ("efetch.fcgi", 429),
        ("efetch.fcgi", 200),
    ]
    assert all("retry-after" not in r.headers for r in records)
    spacing = gaps(local_archive)
    # A retry waits at least the backoff floor, well above the 0.1 s the rate alone imposes.
    assert spacing[0] >= 0.29 and spacing[2] >= 0.29, spacing
    assert API_KEY not in report.to_json()
    assert urlsplit(batch.url or "").query.count("api_key=REDACTED") == 1


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"email": None},
            "[sources.lit] email: required by NCBI's usage policy (they contact you before "
            'blocking): email = "you@example.org" or "${NCBI_EMAIL}"',
        ),
        ({"email": "nobody"}, "[sources.lit] email: not an email address: 'nobody'"),
        ({"mindate": "2020"}, "give mindate and maxdate together"),
        (
            {"batch_size": 10001},
            "[sources.lit] batch_size: Input should be less than or equal to 10000",
        ),
        (
            {"method": "esummary", "retmode": "json", "batch_size": 501},
            "esummary with retmode json takes at most 500 records per request",
        ),
        ({"method": "esummary", "rettype": "gb"}, "esummary takes no rettype"),
        ({"tool": "my tool"}, "[sources.lit] tool: String should match pattern"),
    ],
)
def test_configuration_errors_are_one_clear_line(
    astroingest_host: Host, tmp_path: Path, keys: dict[str, object], message: str
) -> None:
    settings = {k: v for k, v in keys.items() if v is not None}
    text = source(**settings)
    if keys.get("email", "") is None:
        text = text.replace(f'email = "{EMAIL}"\n', "")
    path = tmp_path / "sources.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, astroingest_host)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_every_field_is_documented() -> None:
    from astroingest import SourceConfig

    own = set(EutilsConfig.model_fields) - set(SourceConfig.model_fields)
    assert own >= {"db", "term", "rettype", "retmode", "batch_size", "api_key", "email", "tool"}
    assert all(EutilsConfig.model_fields[name].description for name in own)
