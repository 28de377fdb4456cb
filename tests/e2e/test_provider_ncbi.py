"""`astroingest run` with an ncbi.eutils source against a local E-utilities on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from astroingest._archive_server import ArchiveRequest, ArchiveServer, Reply
from tests.conftest import run_cli
from tests.e2e.conftest import partials, reports, sha256, stored

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ncbi"
ESEARCH = (FIXTURES / "esearch_pubmed_cancer_usehistory.xml").read_bytes()  # Count 42249
ARTICLES = (FIXTURES / "efetch_pubmed_12091962_9997_abstract.xml").read_bytes()
WEBENV = "MCID_6927d6e7fee3e90f880ec190"
API_KEY = "e2e0123456789abcdef0123456789abcdef"
EMAIL = "curator@example.org"


def test_pubmed_search_lands_in_batches_and_reruns_unchanged(tmp_path: Path) -> None:
    searches: list[dict[str, str]] = []

    def esearch(request: ArchiveRequest) -> Reply:
        searches.append(request.form())
        return Reply(200, ESEARCH, "text/xml; charset=UTF-8", {"X-RateLimit-Limit": "10"})

    def efetch(request: ArchiveRequest) -> Reply:
        p = request.params
        wanted = {"db": "pubmed", "query_key": "1", "WebEnv": WEBENV, "rettype": "abstract"}
        identity = (p.get("tool"), p.get("email"), p.get("api_key"))
        if any(p.get(k) != v for k, v in wanted.items()) or identity != (
            "astroingest",
            EMAIL,
            API_KEY,
        ):
            return Reply(400, b"unexpected efetch parameters", "text/plain")
        return Reply(200, ARTICLES, "text/xml; charset=UTF-8")

    with ArchiveServer() as archive:
        archive.route("/entrez/eutils/esearch.fcgi", esearch, methods=["POST"])
        archive.route("/entrez/eutils/efetch.fcgi", efetch, methods=["GET"])
        sources = tmp_path / "sources.toml"
        sources.write_text(
            "[defaults]\nbackoff = 0.05\nmax_backoff = 0.2\nread_timeout = 5\n\n"
            "[sources.cancer]\n"
            'plugin = "ncbi.eutils"\n'
            f'base_url = "{archive.url("/entrez/eutils")}"\n'
            'db = "pubmed"\n'
            'term = "cancer"\n'
            'rettype = "abstract"\n'
            "batch_size = 2\n"
            "max_records = 3\n"
            'datetype = "edat"\n'
            "reldate = 60\n"
            'email = "${NCBI_EMAIL}"\n'
            'api_key = "${NCBI_API_KEY}"\n'
        )
        env = {"NCBI_API_KEY": API_KEY, "NCBI_EMAIL": EMAIL}
        first = run_cli(["run", "--sources", str(sources), "-v"], env=env)
        second = run_cli(["run", "--sources", str(sources), "-v"], env=env)
        fetches = [r for r in archive.requests() if r.path.endswith("/efetch.fcgi")]

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert len(searches) == 2 and len(fetches) == 4
    assert searches[0] == {
        "db": "pubmed",
        "term": "cancer",
        "usehistory": "y",
        "retmax": "0",
        "retmode": "xml",
        "datetype": "edat",
        "reldate": "60",
        "tool": "astroingest",
        "email": EMAIL,
        "api_key": API_KEY,
    }
    data = tmp_path / "astroingest-data"
    landed = stored(data, "cancer")
    assert sorted(k.split("/", 1)[1] for k in landed) == [
        "00000000-00000001.xml",
        "00000002-00000003.xml",
    ]
    assert {k.split("/", 1)[0] for k in landed} == {next(iter(landed)).split("/", 1)[0]}
    assert next(iter(landed)).startswith("pubmed-")
    assert set(landed.values()) == {ARTICLES}

    one, two = reports(data)
    assert one["status"] == "ok"
    assert one["totals"] == {
        "stored": 2,
        "unchanged": 0,
        "failed": 0,
        "quarantined": 0,
        "skipped": 0,
        "bytes": 2 * len(ARTICLES),
    }
    by_key = {a["key"].split("/", 1)[1]: a for a in one["assets"]}
    last = by_key["00000002-00000003.xml"]
    assert last["sha256"] == sha256(ARTICLES)
    assert last["validator"] == "xml" and last["quality"] == 1.0
    assert last["provenance"]["provider"] == "NCBI E-utilities"
    assert last["provenance"]["count"] == 42249
    assert last["provenance"]["records"] == [3, 3]
    assert last["provenance"]["filters"] == {"datetype": "edat", "reldate": 60}
    assert last["provenance"]["citation"].startswith("Entrez Programming Utilities Help")
    assert "retstart=2&retmax=1" in last["url"]
    assert two["status"] == "ok"
    assert two["totals"]["unchanged"] == 2 and two["totals"]["stored"] == 0

    # Neither the key nor the (interpolated, so scrubbed) email escapes into what people read.
    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert API_KEY not in text and EMAIL not in text
    for path in (data / "logs").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert API_KEY.encode() not in content and EMAIL.encode() not in content, path
    assert partials(data) == []
