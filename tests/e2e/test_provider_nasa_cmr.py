"""``nasa.cmr`` end to end: the real CLI against a local CMR + Earthdata Login and a local DAAC.

One ArchiveServer plays CMR (``/search/granules.umm_json``, paged by the
``CMR-Search-After`` request header) and Earthdata Login's token API; a second one, on
another origin, plays the DAAC and answers 401 to any request without the bearer token.
The search pages are the real recorded UMM-G item (tests/fixtures/nasa, see PROVENANCE.md)
with three edits per granule: its GET DATA link points at the local DAAC, and its file's
SizeInBytes and Checksum describe the small body served there. Page 2's granule is a copy
with the granule id advanced to the next 5-day file.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from astroingest._archive_server import ArchiveRequest, ArchiveServer, Reply
from tests.conftest import run_cli
from tests.e2e.conftest import reports, sha256, stored

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nasa"
PAGE = json.loads((FIXTURES / "cmr_granules_umm_json_page_size1_EXTRACTED.json").read_bytes())
SHORT_NAME = "SEA_SURFACE_HEIGHT_ALT_GRIDS_L4_2SATS_5DAY_6THDEG_V_JPL2205"
UMM_JSON = "application/vnd.nasa.cmr.umm_results+json;version=1.6.5; charset=utf-8"
SEARCH_AFTER_1 = '["pocloud",1577923200000,2546526969]'  # recorded in the cassette
SEARCH_AFTER_2 = '["pocloud",1578355200000,2546527012]'
GRANULES = ("ssh_grids_v2205_2020010212", "ssh_grids_v2205_2020010712")
BODIES = (
    b"CDF\x01" + bytes(60) + b"sea surface height anomaly 2020-01-02" * 40,
    b"CDF\x01" + bytes(60) + b"sea surface height anomaly 2020-01-07" * 40,
)
TOKEN = "edl-e2e-token-5f0c2a"
PASSWORD = "e2e correct horse battery"


def granule(index: int, daac: ArchiveServer, algorithm: str) -> dict[str, Any]:
    name, body = GRANULES[index], BODIES[index]
    item: dict[str, Any] = json.loads(json.dumps(PAGE["items"][0]).replace(GRANULES[0], name))
    if index:
        item["meta"]["concept-id"] = "G2546527012-POCLOUD"
    for link in item["umm"]["RelatedUrls"]:
        if link["Type"] == "GET DATA":
            link["URL"] = daac.url(f"podaac-ops-cumulus-protected/{SHORT_NAME}/{name}.nc")
    entry = item["umm"]["DataGranule"]["ArchiveAndDistributionInformation"][0]
    digest = hashlib.new(algorithm.replace("-", "").lower(), body).hexdigest()
    entry["SizeInBytes"] = len(body)
    entry["Checksum"] = {"Value": digest, "Algorithm": algorithm}
    daac.add(
        f"podaac-ops-cumulus-protected/{SHORT_NAME}/{name}.nc",
        body,
        content_type="application/x-netcdf",
    )
    return item


def serve_cmr_and_login(archive: ArchiveServer, pages: list[dict[str, Any]]) -> None:
    def search(request: ArchiveRequest) -> Reply:
        if request.params.get("short_name") != SHORT_NAME or request.params.get("page_size") != "1":
            return Reply.of_json({"errors": [f"unexpected query {request.query}"]}, 400)
        after = request.headers.get("cmr-search-after")
        answers = {None: (0, SEARCH_AFTER_1), SEARCH_AFTER_1: (1, SEARCH_AFTER_2)}
        if after not in answers:
            return Reply.of_json({"errors": [f"unknown search-after {after}"]}, 400)
        index, next_after = answers[after]
        body = json.dumps({"hits": 2, "took": 5, "items": [pages[index]]}).encode()
        return Reply(200, body, UMM_JSON, {"CMR-Hits": "2", "CMR-Search-After": next_after})

    def find_or_create_token(request: ArchiveRequest) -> Reply:
        basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {basic}":
            return Reply.of_json(
                {"error": "invalid_credentials", "error_description": "Invalid user credentials"},
                401,
            )
        token = {"access_token": TOKEN, "token_type": "Bearer", "expiration_date": "06/25/2024"}
        return Reply.of_json(token)

    archive.route("/search/granules.umm_json", search, methods=["GET"])
    archive.route("/api/users/find_or_create_token", find_or_create_token, methods=["POST"])


def test_cmr_search_pages_then_downloads_verified_granules_with_an_edl_token(
    tmp_path: Path,
) -> None:
    with ArchiveServer() as cmr, ArchiveServer() as daac:
        pages = [granule(0, daac, "MD5"), granule(1, daac, "SHA-256")]
        daac.require_header("Authorization", f"Bearer {TOKEN}")
        serve_cmr_and_login(cmr, pages)
        sources = tmp_path / "sources.toml"
        sources.write_text(f"""
[defaults]
backoff = 0.05
max_backoff = 0.2
read_timeout = 5

[sources.ssh]
plugin = "nasa.cmr"
base_url = "{cmr.url("search")}"
token_url = "{cmr.url("api/users/find_or_create_token")}"
short_name = "{SHORT_NAME}"
temporal = ["2020-01-01T00:00:00Z", "2022-12-31T23:59:59Z"]
page_size = 1
username = "alice"
password = "${{EARTHDATA_PASSWORD}}"
""")
        env = {"EARTHDATA_PASSWORD": PASSWORD}

        first = run_cli(["run", "--sources", str(sources)], env=env, cwd=tmp_path)
        assert first.returncode == 0, first.stderr

        data = tmp_path / "astroingest-data"
        keys = [f"{g}/{g}.nc" for g in GRANULES]
        assert stored(data, "ssh") == dict(zip(keys, BODIES, strict=True))
        [report] = reports(data)
        assert report["status"] == "ok"
        assert report["totals"]["stored"] == 2
        by_key = {a["key"]: a for a in report["assets"]}
        for key, body in zip(keys, BODIES, strict=True):
            assert by_key[key]["status"] == "stored"
            assert by_key[key]["sha256"] == sha256(body)
            assert by_key[key]["size"] == len(body)
        provenance = by_key[keys[0]]["provenance"]
        assert provenance["provider"] == "NASA Earthdata CMR"
        assert provenance["endpoint"] == cmr.url("search/granules.umm_json")
        assert provenance["concept_id"] == "G2546526969-POCLOUD"
        assert provenance["query"]["short_name"] == SHORT_NAME
        assert provenance["published"]["Checksum"]["Algorithm"] == "MD5"
        assert by_key[keys[1]]["provenance"]["concept_id"] == "G2546527012-POCLOUD"

        searches = cmr.requests("/search/granules.umm_json")
        assert [r.headers.get("cmr-search-after") for r in searches] == [None, SEARCH_AFTER_1]
        assert all(r.status == 200 for r in daac.requests())

        second = run_cli(["run", "--sources", str(sources)], env=env, cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        latest = reports(data)[-1]
        assert latest["totals"]["unchanged"] == 2
        assert latest["totals"]["stored"] == 0
        assert {a["status"] for a in latest["assets"]} == {"unchanged"}

        everything = first.stdout + first.stderr + second.stdout + second.stderr
        everything += "".join(p.read_text() for p in (data / "logs" / "runs").glob("*.json"))
        assert PASSWORD not in everything
        assert TOKEN not in everything
