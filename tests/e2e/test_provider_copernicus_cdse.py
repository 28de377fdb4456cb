"""``copernicus.cdse`` end to end: the real CLI against a local Data Space on 127.0.0.1.

One ArchiveServer plays the identity server (token + logout) and the OData catalogue and
download hosts at their real paths; a second one, on another port (another origin), plays
zipper.dataspace…, where downloads are redirected and a Bearer token is required.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import blake3

from astroingest._archive_server import ArchiveRequest, ArchiveServer, Reply
from tests.conftest import run_cli
from tests.e2e.conftest import reports, sha256, stored

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "copernicus"
    / "cdse_odata_products_s2_l1c_expand_attributes_assets.json"
)
REALM = "/auth/realms/CDSE/protocol/openid-connect"
USER = "alice@example.org"
PASSWORD = "e2e-Pa55word"
TOKEN = "tok-1"


def product_zip(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}/manifest.safe", f"<manifest product='{name}'/>\n")
    return buffer.getvalue()


def publish(product: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The recorded product with ContentLength and Checksum values describing ``body``."""
    edited = copy.deepcopy(product)
    edited["ContentLength"] = len(body)
    digests = {"MD5": hashlib.md5(body).hexdigest(), "BLAKE3": blake3.blake3(body).hexdigest()}
    for entry in edited["Checksum"]:
        entry["Value"] = digests[entry["Algorithm"]]
    return edited


class Cdse:
    """Token, logout, catalogue pages and $value redirects, as the Data Space answers them."""

    def __init__(self, archive: ArchiveServer, zipper: ArchiveServer) -> None:
        recorded = json.loads(FIXTURE.read_text())
        # Page 2 is DERIVED: the recorded page 1's second product as another tile
        # (Id -> uuid5(Id), T55PBR -> T55PCR), with no nextLink, as a last page has none.
        extra = copy.deepcopy(recorded["value"][1])
        extra["Id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, extra["Id"]))
        extra["Name"] = extra["Name"].replace("T55PBR", "T55PCR")
        products = [*recorded["value"], extra]
        self.bodies = {p["Id"]: product_zip(p["Name"]) for p in products}
        published = [publish(p, self.bodies[p["Id"]]) for p in products]
        self.products = published
        # Page 1 is the recording with those edits, its nextLink moved to this server.
        self.page1 = {**recorded, "value": published[:2]}
        self.page1["@odata.nextLink"] = recorded["@odata.nextLink"].replace(
            "https://catalogue.dataspace.copernicus.eu", archive.base_url
        )
        self.page2 = {"@odata.context": recorded["@odata.context"], "value": published[2:]}
        self.grants: list[dict[str, str]] = []
        self.logouts: list[dict[str, str]] = []
        self.queries: list[dict[str, str]] = []
        archive.route(f"{REALM}/token", self.token, methods=["POST"])
        archive.route(f"{REALM}/logout", self.logout, methods=["POST"])
        archive.route("/odata/v1/Products", self.catalogue, methods=["GET"])
        for product in published:
            target = zipper.add(
                f"zipper/{product['Id']}.zip",
                self.bodies[product["Id"]],
                content_type="application/zip",
            )
            archive.route(
                f"/odata/v1/Products({product['Id']})/$value",
                lambda _request, target=target: Reply(307, headers={"Location": target}),
                methods=["GET"],
            )
        zipper.require_header("Authorization", f"Bearer {TOKEN}")

    def token(self, request: ArchiveRequest) -> Reply:
        form = request.form()
        self.grants.append(form)
        if form != {
            "grant_type": "password",
            "username": USER,
            "password": PASSWORD,
            "client_id": "cdse-public",
        }:
            return Reply.of_json({"error": "invalid_grant"}, status=401)
        return Reply.of_json(
            {
                "access_token": TOKEN,
                "expires_in": 600,
                "refresh_expires_in": 3600,
                "refresh_token": "refresh-1",
                "token_type": "Bearer",
            }
        )

    def logout(self, request: ArchiveRequest) -> Reply:
        self.logouts.append(request.form())
        return Reply(204)

    def catalogue(self, request: ArchiveRequest) -> Reply:
        self.queries.append(request.params)
        return Reply.of_json(self.page2 if "$skip" in request.params else self.page1)


def test_cdse_lands_verified_products_then_reruns_unchanged(tmp_path: Path) -> None:
    with ArchiveServer() as archive, ArchiveServer() as zipper:
        cdse = Cdse(archive, zipper)
        sources = tmp_path / "sources.toml"
        sources.write_text(f"""
[defaults]
backoff = 0.05
read_timeout = 5

[sources.s2]
plugin = "copernicus.cdse"
collection = "SENTINEL-2"
product_type = "S2MSI1C"
area = [137.7729, 13.1342, 153.7491, 23.886]
start = 2020-08-08T00:00:00Z
end = 2020-08-16T00:00:00Z
page_size = 2
username = "{USER}"
password = "${{CDSE_PASSWORD}}"
base_url = "{archive.base_url}/odata/v1"
download_url = "{archive.base_url}/odata/v1"
token_url = "{archive.base_url}{REALM}/token"
""")
        env = {"CDSE_PASSWORD": PASSWORD}
        first = run_cli(["run", "--sources", str(sources)], cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stderr

        data = tmp_path / "astroingest-data"
        expected = {f"SENTINEL-2/{p['Name']}.zip": cdse.bodies[p["Id"]] for p in cdse.products}
        assert stored(data, "s2") == expected
        [report] = reports(data)
        assert report["status"] == "ok"
        assert report["totals"]["stored"] == 3
        by_key = {a["key"]: a for a in report["assets"]}
        assert set(by_key) == set(expected)
        for product in cdse.products:
            entry = by_key[f"SENTINEL-2/{product['Name']}.zip"]
            assert entry["sha256"] == sha256(cdse.bodies[product["Id"]])
            assert entry["url"] == f"{archive.base_url}/odata/v1/Products({product['Id']})/$value"
            assert entry["validator"] == "zip"
            provenance = entry["provenance"]
            assert provenance["product_id"] == product["Id"]
            assert provenance["content_date"] == product["ContentDate"]
            assert provenance["footprint"] == product["Footprint"]
            assert provenance["attribution"] == "Copernicus Sentinel data 2020"
            assert "S2MSI1C" in provenance["query"]["$filter"]
        assert cdse.queries[0]["$filter"] == (
            "Collection/Name eq 'SENTINEL-2' and Attributes/OData.CSC.StringAttribute/any("
            "att:att/Name eq 'productType' and att/OData.CSC.StringAttribute/Value eq "
            "'S2MSI1C') and OData.CSC.Intersects(area=geography'SRID=4326;POLYGON(("
            "137.7729 13.1342,153.7491 13.1342,153.7491 23.886,137.7729 23.886,"
            "137.7729 13.1342))') and ContentDate/Start ge 2020-08-08T00:00:00.000Z and "
            "ContentDate/Start lt 2020-08-16T00:00:00.000Z"
        )
        assert cdse.queries[1]["$skip"] == "2"  # the recorded nextLink, followed
        downloads = [r for r in zipper.requests() if r.path.startswith("/zipper/")]
        assert [r.status for r in downloads] == [200, 200, 200]
        assert {r.headers["authorization"] for r in downloads} == {f"Bearer {TOKEN}"}

        second = run_cli(["run", "--sources", str(sources)], cwd=tmp_path, env=env)
        assert second.returncode == 0, second.stderr
        rerun = reports(data)[-1]
        assert rerun["totals"]["unchanged"] == 3 and rerun["totals"]["stored"] == 0
        assert stored(data, "s2") == expected

        assert [g["grant_type"] for g in cdse.grants] == ["password", "password"]
        assert cdse.logouts == [{"client_id": "cdse-public", "refresh_token": "refresh-1"}] * 2
        for output in (first.stdout, first.stderr, second.stdout, second.stderr):
            assert PASSWORD not in output
        for path in (data / "logs" / "runs").glob("*.json"):
            assert PASSWORD not in path.read_text()
