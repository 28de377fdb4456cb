"""``eso.tap`` end to end: the real CLI against a local ESO archive on 127.0.0.1.

One ArchiveServer plays ``archive.eso.org/tap_obs/sync``, ``www.eso.org/sso/oidc/token`` and
``dataportal.eso.org/dataPortal/file/<dp_id>`` at their real paths. The listing is the recorded
``dbo.raw`` result (tests/fixtures/eso/tap_obs_dbo_raw_sgra_DERIVED_pandas.csv, a pandas
re-serialisation) served as the TABLEDATA VOTable tap_obs sends, with one edit: each row's
``access_url`` points at this server instead of dataportal.eso.org. The first two frames are
served unix-compressed (the real ``compress`` fixtures), the third gzipped, the rest as FITS.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from astroingest._archive_server import ArchiveRequest, ArchiveServer, Reply
from astroingest_plugins import eso
from tests.conftest import run_cli
from tests.e2e.conftest import reports, sha256, stored
from tests.plugins.test_eso import (
    FRAME_B12,
    FRAME_B12_FITS,
    FRAME_B16,
    FRAME_B16_FITS,
    RAW_COLUMNS,
    RAW_ROWS,
    SGRA_QUERY,
    fits_frame,
    jwt,
    votable,
)

USER = "alice"
PASSWORD = "e2e-Pa55word-eso"
TOKEN = jwt("alice-e2e", 4102444800)  # expires in 2100


class Eso:
    """tap_obs sync, the token endpoint and the portal's file URLs, as ESO answers them."""

    def __init__(self, archive: ArchiveServer) -> None:
        self.rows = [
            {**row, "access_url": archive.url(f"dataPortal/file/{row['dp_id']}")}
            for row in RAW_ROWS
        ]
        self.listing = votable(RAW_COLUMNS, self.rows)
        self.fits: dict[str, bytes] = {}
        for index, row in enumerate(self.rows):
            dp_id = row["dp_id"]
            fits = {0: FRAME_B16_FITS, 1: FRAME_B12_FITS}.get(index) or fits_frame(dp_id)
            served = {0: FRAME_B16, 1: FRAME_B12, 2: gzip.compress(fits, mtime=0)}.get(index, fits)
            archive.add(f"dataPortal/file/{dp_id}", served)
            self.fits[dp_id] = fits
        self.queries: list[dict[str, str]] = []
        self.logins: list[dict[str, str]] = []
        archive.route("/tap_obs/sync", self.sync, methods=["GET"])
        archive.route("/sso/oidc/token", self.token, methods=["GET"])

    def sync(self, request: ArchiveRequest) -> Reply:
        self.queries.append(request.params)
        return Reply(200, self.listing, "application/x-votable+xml")

    def token(self, request: ArchiveRequest) -> Reply:
        self.logins.append(request.params)
        expected = {**eso.TOKEN_PARAMS, "username": USER, "password": PASSWORD}
        if request.params != expected:
            return Reply.of_json({"error": "invalid_grant"}, status=401)
        return Reply.of_json({"id_token": TOKEN, "access_token": "unused", "expires_in": 28800})


def test_eso_lands_listing_and_products_then_reruns_unchanged(tmp_path: Path) -> None:
    with ArchiveServer() as archive:
        portal = Eso(archive)
        sources = tmp_path / "sources.toml"
        sources.write_text(f"""
[defaults]
backoff = 0.05
read_timeout = 5

[sources.sgra]
plugin = "eso.tap"
query = {json.dumps(SGRA_QUERY)}
download = true
username = "{USER}"
password = "${{ESO_PASSWORD}}"
base_url = "{archive.base_url}/tap_obs"
token_url = "{archive.base_url}/sso/oidc/token"
dataportal_url = "{archive.base_url}/dataPortal/file"
""")
        env = {"ESO_PASSWORD": PASSWORD}
        first = run_cli(["run", "--sources", str(sources)], cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stderr

        data = tmp_path / "astroingest-data"
        table = next(k for k in stored(data, "sgra") if not k.startswith("products/"))
        assert table.startswith("dbo.raw-") and table.endswith(".vot")
        products = {
            "products/" + dp_id.replace(":", "_") + ".fits": fits
            for dp_id, fits in portal.fits.items()
        }
        assert stored(data, "sgra") == {table: portal.listing, **products}

        [report] = reports(data)
        assert report["status"] == "ok"
        assert report["totals"]["stored"] == len(RAW_ROWS) + 1
        entries = {a["key"]: a for a in report["assets"]}
        for row in portal.rows:
            entry = entries["products/" + row["dp_id"].replace(":", "_") + ".fits"]
            assert entry["sha256"] == sha256(portal.fits[row["dp_id"]])
            assert entry["validator"] == "fits"
            assert entry["url"] == row["access_url"]
            provenance = entry["provenance"]
            assert provenance["dp_id"] == row["dp_id"]
            assert provenance["target"] == row["target"]
            assert provenance["instrument"] == row["instrument"]
            assert provenance["programme"] == row["prog_id"]
            assert provenance["query"] == SGRA_QUERY
            assert provenance["table_key"] == table
            assert provenance["terms"] == eso.TERMS
        assert entries[table]["provenance"]["maxrec"] == 1001

        assert portal.queries == [
            {
                "REQUEST": "doQuery",
                "LANG": "ADQL",
                "QUERY": SGRA_QUERY,
                "FORMAT": "votable",
                "MAXREC": "1001",
            }
        ]
        files = [r for r in archive.requests() if r.path.startswith("/dataPortal/file/")]
        assert len(files) == len(RAW_ROWS)
        assert {r.headers.get("authorization") for r in files} == {f"Bearer {TOKEN}"}
        [tap] = archive.requests("/tap_obs/sync")
        assert "authorization" not in tap.headers

        second = run_cli(["run", "--sources", str(sources)], cwd=tmp_path, env=env)
        assert second.returncode == 0, second.stderr
        rerun = reports(data)[-1]
        assert rerun["totals"]["unchanged"] == len(RAW_ROWS) + 1
        assert rerun["totals"]["stored"] == 0
        assert stored(data, "sgra") == {table: portal.listing, **products}

        assert len(portal.logins) == 2
        for output in (first.stdout, first.stderr, second.stdout, second.stderr):
            assert PASSWORD not in output and TOKEN not in output
        for path in (data / "logs" / "runs").glob("*.json"):
            assert PASSWORD not in path.read_text() and TOKEN not in path.read_text()
