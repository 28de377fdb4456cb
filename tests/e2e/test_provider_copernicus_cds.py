"""``copernicus.cds`` end to end: the real CLI against a CDS-shaped API on 127.0.0.1.

The CDS payloads are SYNTHETIC (there is no recorded CDS job, results or problem document
in /work/shared/fixtures): they come from the builders in
tests/plugins/test_copernicus_cds.py, which follow the shapes documented in apis.md
section 5b. The routes are the real API paths under ``<server>/api``; the result file is
served from a second path, standing in for the object store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from astroingest._archive_server import ArchiveRequest, ArchiveServer, Reply
from tests.conftest import run_cli
from tests.e2e.conftest import reports, sha256, stored
from tests.plugins.test_copernicus_cds import (
    DATASET,
    REQUEST,
    expected_key,
    inline,
    job_status,
    netcdf4_body,
    problem,
    results,
    submitted,
)

TOKEN = "5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a5b"
JOBS = ("4b1f0c2e-job-run-1", "9d3a7e5f-job-run-2")


class FakeCds:
    """Submit -> running -> successful -> results, one job per POST, in JOBS order."""

    def __init__(self, archive: ArchiveServer, body: bytes) -> None:
        self.archive = archive
        self.api = archive.url("api")
        self.body = body
        self.submitted: list[str] = []
        self.polls: dict[str, int] = {}
        archive.route(
            f"api/retrieve/v1/processes/{DATASET}/execution", self.submit, methods=["POST"]
        )
        for job in JOBS:
            archive.route(f"api/retrieve/v1/jobs/{job}", self.status(job), methods=["GET"])
            archive.route(f"api/retrieve/v1/jobs/{job}/results", self.results(job), methods=["GET"])
            # A random-looking file name per job, as the CDS cache gives each result.
            archive.add(self.file_path(job), body, content_type="application/netcdf")

    @staticmethod
    def file_path(job: str) -> str:
        return f"cci2-prod-cache/{job.split('-')[0]}.nc"

    def submit(self, request: ArchiveRequest) -> Reply:
        if request.headers.get("private-token") != TOKEN:
            return Reply.of_json(problem(401, "authentication failed"), status=401)
        if request.json() != {"inputs": REQUEST}:
            return Reply.of_json(problem(400, "invalid request", "unexpected inputs"), 400)
        job = JOBS[len(self.submitted)]
        self.submitted.append(job)
        return Reply.of_json(submitted(job, self.api), status=201)

    def status(self, job: str) -> Callable[[ArchiveRequest], Reply]:
        def handle(request: ArchiveRequest) -> Reply:
            if request.headers.get("private-token") != TOKEN:
                return Reply.of_json(problem(401, "authentication failed"), status=401)
            self.polls[job] = self.polls.get(job, 0) + 1
            phase = "running" if self.polls[job] == 1 else "successful"
            return Reply.of_json(job_status(job, phase, self.api))

        return handle

    def results(self, job: str) -> Callable[[ArchiveRequest], Reply]:
        def handle(request: ArchiveRequest) -> Reply:
            href = self.archive.url(self.file_path(job))
            return Reply.of_json(results(href, self.body))

        return handle


def test_cds_job_lands_its_netcdf_then_reruns_unchanged(tmp_path: Path) -> None:
    body = netcdf4_body(4096)
    key = expected_key(REQUEST)
    with ArchiveServer() as archive:
        cds = FakeCds(archive, body)
        sources = tmp_path / "sources.toml"
        sources.write_text(
            f"""[defaults]
backoff = 0.05
max_backoff = 0.2
read_timeout = 5

[sources.era5]
plugin = "copernicus.cds"
base_url = "{cds.api}"
dataset = "{DATASET}"
token = "${{CDSAPI_KEY}}"
poll_interval = 0.05
poll_max = 0.1
request = {inline(REQUEST)}
"""
        )
        env = {"CDSAPI_KEY": TOKEN}
        first = run_cli(["run", "--sources", str(sources)], env=env)
        second = run_cli(["run", "--sources", str(sources)], env=env)
        downloads = [r for job in JOBS for r in archive.requests(cds.file_path(job))]

    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert cds.submitted == list(JOBS)
    assert cds.polls == {JOBS[0]: 2, JOBS[1]: 2}
    assert [r.path for r in downloads] == [f"/{cds.file_path(job)}" for job in JOBS]
    assert all("private-token" not in r.headers for r in downloads)

    data = tmp_path / "astroingest-data"
    landed = stored(data, "era5")
    assert landed == {key: body}
    assert sha256(landed[key]) == sha256(body)

    run1, run2 = reports(data)
    [entry1] = run1["assets"]
    assert run1["status"] == "ok" and run1["totals"]["stored"] == 1
    assert entry1["key"] == key and entry1["status"] == "stored"
    assert entry1["sha256"] == sha256(body) and entry1["size"] == len(body)
    assert entry1["url"] == archive.url(cds.file_path(JOBS[0]))
    provenance = entry1["provenance"]
    assert provenance["provider"] == "Copernicus Climate Data Store"
    assert provenance["endpoint"] == f"{cds.api}/retrieve/v1/processes/{DATASET}/execution"
    assert provenance["dataset"] == DATASET
    assert provenance["request"] == REQUEST
    assert provenance["job_id"] == JOBS[0]
    assert provenance["file:size"] == len(body)
    assert "Copernicus Climate Change Service" in provenance["citation"]

    [entry2] = run2["assets"]
    assert run2["status"] == "ok"
    assert run2["totals"]["unchanged"] == 1 and run2["totals"]["stored"] == 0
    assert entry2["key"] == key and entry2["status"] == "unchanged"
    assert entry2["provenance"]["job_id"] == JOBS[1]

    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert TOKEN not in text
    for path in (data / "logs").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
