"""TAP end to end: the real CLI against one local archive playing two TAP services.

``/TAP`` plays the NASA Exoplanet Archive (``nasa.exoplanet_archive``, a sync CSV query
with the archive's lower-case ``query=``/``format=``); ``/tap-server`` plays the Gaia
archive's TAP+ (``esa.gaia``, logged in, a query with no TOP, so an async UWS job):
login, submit (303 to the job), poll, results, DELETE (303 to the job list), logout.

Bodies (tests/fixtures, see PROVENANCE.md): the exoplanet CSV is the archive's recorded
IPAC row for TOI 256.01 converted to CSV (DERIVED, see tests/plugins/test_nasa_exoplanet_archive);
the Gaia job documents are the real UWS document with jobId and phase edited, and the
result is a real Gaia async-job result VOTable, served gzipped without Content-Encoding as
the archive's ``encoding="gzip"`` results may be. The login answer is built here.
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Callable
from pathlib import Path

from astroingest._archive_server import ArchiveRequest, ArchiveServer, Reply
from tests.conftest import run_cli
from tests.e2e.conftest import reports, sha256, stored
from tests.plugins.test_nasa_exoplanet_archive import TOI_CSV, TOI_QUERY
from tests.plugins.test_tap import RESULT, expected_key, job_document

GAIA_QUERY = "SELECT * FROM user_jdoe.my_table"
PASSWORD = "e2e gaia pass phrase 7"
SESSION = "JSESSIONID=E2E0123456789ABCDEF0123456789AB"
VOT_TYPE = "application/x-votable+xml"
Handler = Callable[[ArchiveRequest], Reply]


class GaiaArchive:
    """TAP+ with login, on ``archive`` under /tap-server; every job needs the session."""

    def __init__(self, archive: ArchiveServer) -> None:
        self.archive = archive
        self.job_ids = (f"{n}O" for n in itertools.count(1542458555634))
        self.jobs: list[str] = []
        self.refused: list[str] = []
        archive.route("/tap-server/login", self.login, methods=["POST"])
        archive.route("/tap-server/logout", self.logout, methods=["POST"])
        archive.route("/tap-server/tap/async", self.submit, methods=["POST"])
        archive.route("/tap-server/tap/async", self.job_list, methods=["GET"])

    def login(self, request: ArchiveRequest) -> Reply:
        if request.form() != {"username": "jdoe", "password": PASSWORD}:
            return Reply(401, b"Login failed", "text/plain")
        cookie = f"{SESSION}; Path=/tap-server; HttpOnly"
        return Reply(200, b"OK", "text/plain", {"Set-Cookie": cookie})

    def logout(self, request: ArchiveRequest) -> Reply:
        return Reply(200, b"OK", "text/plain")

    def job_list(self, request: ArchiveRequest) -> Reply:
        body = b'<uws:jobs xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0"/>'
        return Reply(200, body, "text/xml")

    def submit(self, request: ArchiveRequest) -> Reply:
        form = request.form()
        expected = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": GAIA_QUERY}
        if not self.session(request) or {k: form.get(k) for k in expected} != expected:
            return Reply(400, b"bad submission", "text/plain")
        job_id = next(self.job_ids)
        self.jobs.append(job_id)
        phases = iter(["EXECUTING", "COMPLETED"])
        state = {"phase": "QUEUED" if form.get("PHASE") == "RUN" else "PENDING"}
        path = f"/tap-server/tap/async/{job_id}"

        def job(request: ArchiveRequest) -> Reply:
            if request.method == "DELETE":
                return Reply(303, b"", "text/plain", {"Location": "/tap-server/tap/async"})
            return Reply(200, job_document(state["phase"], job_id=job_id), "text/xml")

        def phase(request: ArchiveRequest) -> Reply:
            state["phase"] = next(phases, state["phase"])
            return Reply(200, state["phase"].encode(), "text/plain")

        def result(request: ArchiveRequest) -> Reply:
            return Reply(200, gzip.compress(RESULT, mtime=0), VOT_TYPE)

        for suffix, handler, methods in [
            ("", job, ["GET", "DELETE"]),
            ("/phase", phase, ["GET"]),
            ("/results/result", result, ["GET"]),
        ]:
            self.archive.route(path + suffix, self.needs_session(handler), methods=methods)
        return Reply(303, b"", "text/plain", {"Location": self.archive.url(path)})

    def session(self, request: ArchiveRequest) -> bool:
        return request.headers.get("cookie") == SESSION

    def needs_session(self, handler: Handler) -> Handler:
        def guarded(request: ArchiveRequest) -> Reply:
            if not self.session(request):
                self.refused.append(f"{request.method} {request.path}")
                return Reply(403, b"not your job", "text/plain")
            return handler(request)

        return guarded


def exoplanet_sync(request: ArchiveRequest) -> Reply:
    if request.params != {"query": TOI_QUERY, "format": "csv"}:
        return Reply(400, f"unexpected query {request.query}".encode(), "text/plain")
    return Reply(200, TOI_CSV, "text/csv")


def test_exoplanet_sync_and_gaia_async_land_then_rerun_unchanged(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        archive.route("/TAP/sync", exoplanet_sync, methods=["GET"])
        gaia = GaiaArchive(archive)
        sources = tmp_path / "sources.toml"
        sources.write_text(f"""
[defaults]
backoff = 0.05
max_backoff = 0.2
read_timeout = 5

[sources.toi]
plugin = "nasa.exoplanet_archive"
base_url = "{archive.url("TAP")}"
query = "{TOI_QUERY}"

[sources.gaia_user]
plugin = "esa.gaia"
base_url = "{archive.url("tap-server")}"
query = "{GAIA_QUERY}"
username = "jdoe"
password = "${{GAIA_PASSWORD}}"
poll_interval = 0.02
poll_max = 0.05
""")
        env = {"GAIA_PASSWORD": PASSWORD}

        first = run_cli(["run", "--sources", str(sources)], env=env, cwd=tmp_path)
        assert first.returncode == 0, first.stdout + first.stderr

        data = tmp_path / "astroingest-data"
        toi_key = expected_key("toi", TOI_QUERY, "csv", ".csv")
        gaia_key = expected_key("user_jdoe.my_table", GAIA_QUERY, "votable", ".vot")
        assert stored(data, "toi") == {toi_key: TOI_CSV}
        assert stored(data, "gaia_user") == {gaia_key: RESULT}  # inflated as it streamed
        [report] = reports(data)
        assert report["status"] == "ok"
        assert report["totals"]["stored"] == 2
        by_source = {a["source"]: a for a in report["assets"]}
        toi, job = by_source["toi"], by_source["gaia_user"]
        assert (toi["sha256"], toi["size"], toi["quality"]) == (sha256(TOI_CSV), len(TOI_CSV), 1.0)
        assert (job["sha256"], job["size"], job["quality"]) == (sha256(RESULT), len(RESULT), 1.0)
        assert (
            toi["url"]
            == archive.url("TAP/sync")
            + "?query=select+%2A+from+toi+where+toi+%3D+256.01&format=csv"
        )
        assert toi["provenance"] == {
            "provider": "NASA Exoplanet Archive",
            "endpoint": archive.url("TAP/sync"),
            "mode": "sync",
            "table": "toi",
            "query": TOI_QUERY,
            "format": "csv",
            "citation": "https://exoplanetarchive.ipac.caltech.edu/docs/doi.html",
        }
        assert job["url"] == archive.url(f"tap-server/tap/async/{gaia.jobs[0]}/results/result")
        assert job["provenance"]["mode"] == "async"
        assert job["provenance"]["job_id"] == gaia.jobs[0]
        assert job["provenance"]["rows"] == 5
        assert job["provenance"]["authenticated"] is True
        assert job["provenance"]["citation"].startswith("How to cite and acknowledge Gaia")

        # The job was deleted (its 303 to the job list not followed), then the session closed.
        calls = [(r.method, r.path) for r in archive.requests() if r.path.startswith("/tap-server")]
        job_path = f"/tap-server/tap/async/{gaia.jobs[0]}"
        assert calls[0] == ("POST", "/tap-server/login")
        assert calls[-2:] == [("DELETE", job_path), ("POST", "/tap-server/logout")]
        assert ("GET", "/tap-server/tap/async") not in calls
        assert gaia.refused == []

        second = run_cli(["run", "--sources", str(sources)], env=env, cwd=tmp_path)
        assert second.returncode == 0, second.stdout + second.stderr
        latest = reports(data)[-1]
        assert latest["totals"]["unchanged"] == 2
        assert latest["totals"]["stored"] == 0
        assert {a["key"] for a in latest["assets"]} == {toi_key, gaia_key}
        assert len(gaia.jobs) == 2
        deleted = [r.path for r in archive.requests() if r.method == "DELETE"]
        assert deleted == [f"/tap-server/tap/async/{j}" for j in gaia.jobs]

        everything = first.stdout + first.stderr + second.stdout + second.stderr
        everything += "".join(p.read_text() for p in (data / "logs" / "runs").glob("*.json"))
        assert PASSWORD not in everything
        assert SESSION.split("=")[1] not in everything
