"""The engine's HTTP client: URL redaction, status mapping, retries, budgets, sharded pools."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from pytest_httpx import HTTPXMock

from astroingest import HTTPStatusError, RetryableError
from astroingest._archive_server import ArchiveServer
from astroingest._hosts import HostBudgets, HostLimit
from astroingest._http import (
    USER_AGENT,
    PoliteClient,
    Timeouts,
    check_status,
    make_client,
    redact_url,
)
from astroingest._retry import RetryPolicy
from astroingest._transport import SLOT_EXTENSION, ShardedTransport

REMOTE = "https://archive.example.org/data/catalog.json"
FAST_RETRY = RetryPolicy(retries=3, floor=0.01, ceiling=0.02)

# -- redact_url ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://ana:hunter22@archive.org/a.fits", "https://archive.org/a.fits"),
        ("https://tok3nvalue@archive.org/a.fits", "https://archive.org/a.fits"),
        ("https://archive.org/a?token=abc123", "https://archive.org/a?token=REDACTED"),
        ("https://archive.org/a?api_key=abc123", "https://archive.org/a?api_key=REDACTED"),
        ("https://archive.org/a?apikey=abc123", "https://archive.org/a?apikey=REDACTED"),
        ("https://archive.org/a?password=abc123", "https://archive.org/a?password=REDACTED"),
        ("https://archive.org/a?passwd=abc123", "https://archive.org/a?passwd=REDACTED"),
        ("https://archive.org/a?client_secret=x", "https://archive.org/a?client_secret=REDACTED"),
        ("https://archive.org/a?signature=abc", "https://archive.org/a?signature=REDACTED"),
        (
            "https://bucket.s3.amazonaws.com/a?X-Amz-Signature=abc&X-Amz-Expires=60",
            "https://bucket.s3.amazonaws.com/a?X-Amz-Signature=REDACTED&X-Amz-Expires=60",
        ),
        ("https://archive.org/a?sig=abc", "https://archive.org/a?sig=REDACTED"),
        ("https://archive.org/a?access_token=x", "https://archive.org/a?access_token=REDACTED"),
        ("https://archive.org/a?TOKEN=abc123", "https://archive.org/a?TOKEN=REDACTED"),
    ],
)
def test_redact_url_removes_credentials(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_keeps_ordinary_parameters_and_their_order() -> None:
    url = "https://u:p@archive.org/tap/sync?query=select&format=csv&token=t0k3n&page=2&maxrec=10"
    redacted = redact_url(url)
    assert redacted == (
        "https://archive.org/tap/sync?query=select&format=csv&token=REDACTED&page=2&maxrec=10"
    )
    assert "t0k3n" not in redacted and "u:p" not in redacted


@pytest.mark.parametrize(
    "url",
    [
        "https://archive.org/a.fits",
        "https://archive.org:8443/deep/path/a.fits",
        "https://archive.org/a?format=votable&ra=10.5&dec=-3",
        "http://127.0.0.1:8080/x#part",
    ],
)
def test_redact_url_leaves_secret_free_urls_unchanged(url: str) -> None:
    assert redact_url(url) == url


# -- check_status -------------------------------------------------------------------------


def _response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", REMOTE))


@pytest.mark.parametrize("status", [200, 204, 206, 302, 304])
def test_check_status_passes_bodies_and_not_modified(status: int) -> None:
    check_status(_response(status), "x")  # raises for anything else


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {"Retry-After": "7"}, 7.0),
        (503, {"Retry-After": "0"}, 0.0),
        (503, {}, None),
        (429, {}, None),
        (500, {}, None),
        (502, {}, None),
        (408, {}, None),
    ],
)
def test_check_status_retryable(
    status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    with pytest.raises(RetryableError, match=rf"^HTTP {status} .* for the catalog$") as caught:
        check_status(_response(status, headers), "the catalog")
    assert type(caught.value) is RetryableError
    assert caught.value.retry_after == retry_after


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_check_status_permanent(status: int) -> None:
    with pytest.raises(HTTPStatusError) as caught:
        check_status(_response(status), "the catalog")
    assert caught.value.status_code == status
    assert not isinstance(caught.value, RetryableError)


def test_check_status_404_message() -> None:
    with pytest.raises(HTTPStatusError, match=r"^HTTP 404 Not Found for the catalog$"):
        check_status(_response(404), "the catalog")


# -- PoliteClient against a mocked remote archive -----------------------------------------


def _budgets(connections: int = 4) -> HostBudgets:
    return HostBudgets(HostLimit("*", connections))


async def test_request_retries_a_503_then_succeeds_with_the_user_agent(
    httpx_mock: HTTPXMock,
) -> None:
    httpx_mock.add_response(url=REMOTE, status_code=503, headers={"Retry-After": "0"})
    httpx_mock.add_response(url=REMOTE, status_code=503)
    httpx_mock.add_response(url=REMOTE, json={"entries": 3})
    async with make_client(Timeouts(), 8) as client:
        polite = PoliteClient(client, _budgets(), FAST_RETRY)
        response = await polite.get(REMOTE)
    assert response.status_code == 200
    assert response.json() == {"entries": 3}
    requests = httpx_mock.get_requests()
    assert len(requests) == 3
    assert {r.headers["User-Agent"] for r in requests} == {USER_AGENT}
    assert USER_AGENT.startswith("astroingest/")


async def test_request_gives_up_after_the_policy_s_retries(httpx_mock: HTTPXMock) -> None:
    for _ in range(FAST_RETRY.retries + 1):
        httpx_mock.add_response(url=REMOTE, status_code=503)
    async with make_client(Timeouts(), 8) as client:
        polite = PoliteClient(client, _budgets(), FAST_RETRY)
        with pytest.raises(RetryableError, match="HTTP 503"):
            await polite.get(REMOTE)
    assert len(httpx_mock.get_requests()) == FAST_RETRY.retries + 1


async def test_request_does_not_retry_a_404_and_redacts_its_url(httpx_mock: HTTPXMock) -> None:
    url = "https://archive.example.org/missing.fits?token=t0ps3cret&format=fits"
    httpx_mock.add_response(url=url, status_code=404)
    async with make_client(Timeouts(), 8) as client:
        polite = PoliteClient(client, _budgets(), FAST_RETRY)
        with pytest.raises(HTTPStatusError) as caught:
            await polite.get(url)
    assert caught.value.status_code == 404
    assert "t0ps3cret" not in str(caught.value)
    assert "missing.fits?token=REDACTED&format=fits" in str(caught.value)
    assert len(httpx_mock.get_requests()) == 1


# -- the host connection cap, against a real local archive --------------------------------

LATENCY = 0.2


async def _six_at_once(connections: int) -> tuple[float, list[float]]:
    with ArchiveServer(latency=LATENCY) as archive:
        urls = [archive.add(f"f{i}.txt", b"x\n") for i in range(6)]
        budgets = HostBudgets(HostLimit("*", 16), [HostLimit("127.0.0.1", connections)])
        async with make_client(Timeouts(), 16) as client:
            polite = PoliteClient(client, budgets, RetryPolicy(retries=0))
            start = time.monotonic()
            responses = await asyncio.gather(*(polite.get(u) for u in urls))
            elapsed = time.monotonic() - start
        assert [r.status_code for r in responses] == [200] * 6
        return elapsed, sorted(r.time for r in archive.requests())


async def test_host_connection_cap_holds_through_the_polite_client() -> None:
    elapsed, began = await _six_at_once(connections=2)
    # Two at a time, each waiting LATENCY on the server: three rounds.
    assert elapsed >= 3 * LATENCY - 0.02
    # Never three responses begun within one latency of each other.
    gaps = [later - earlier for earlier, later in zip(began, began[2:], strict=False)]
    assert min(gaps) >= LATENCY - 0.05, gaps


async def test_without_a_tight_cap_the_same_requests_overlap() -> None:
    # The control for the test above: the server does serve six at once.
    elapsed, began = await _six_at_once(connections=6)
    assert elapsed < 2 * LATENCY
    assert began[-1] - began[0] < LATENCY / 2


# -- ShardedTransport ---------------------------------------------------------------------


def _request(host: str, slot: int | None) -> httpx.Request:
    extensions = {} if slot is None else {SLOT_EXTENSION: slot}
    return httpx.Request("GET", f"https://{host}/x", extensions=extensions)


async def test_sharded_transport_maps_a_host_slot_to_the_same_pool_every_time() -> None:
    first, second = ShardedTransport(32), ShardedTransport(32)
    try:
        for host in ("archive.example.org", "cmr.earthdata.nasa.gov", "127.0.0.1"):
            for slot in range(32):
                pool = first.pool_for(_request(host, slot))
                assert first.pool_for(_request(host, slot)) is pool
                # The mapping is a pure function of (host, slot): another client agrees.
                again = second.pool_for(_request(host, slot))
                assert second.pools.index(again) == first.pools.index(pool)
        assert first.pool_for(_request("a.org", None)) is first.pool_for(_request("a.org", 0))
    finally:
        await first.aclose()
        await second.aclose()


async def test_sharded_transport_spreads_one_host_over_several_pools() -> None:
    transport = ShardedTransport(32)
    try:
        assert len(transport.pools) == 32 // transport.per_pool
        counts = Counter(
            transport.pools.index(transport.pool_for(_request("archive.example.org", slot)))
            for slot in range(32)
        )
        assert len(counts) == len(transport.pools)  # every pool gets a share
        assert set(counts.values()) == {transport.per_pool}
    finally:
        await transport.aclose()


async def test_sharded_transport_is_intercepted_by_pytest_httpx(httpx_mock: HTTPXMock) -> None:
    # The engine's client delegates to httpx.AsyncHTTPTransport pools, which pytest-httpx
    # patches: remote archives can be mocked through the real client.
    httpx_mock.add_response(url=REMOTE, text="ok")
    async with make_client(Timeouts(), 8) as client:
        response = await client.get(REMOTE, extensions={SLOT_EXTENSION: 5})
    assert response.text == "ok"
    assert isinstance(client._transport, ShardedTransport)


# --- redirects: followed by PoliteClient, hop by hop ------------------------------------


class _CountingAuth(httpx.Auth):
    """Sets a bearer only for one host, as a plugin's auth flow should."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.hosts_seen: list[str] = []

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        self.hosts_seen.append(f"{request.url.host}:{request.url.port}")
        if f"{request.url.host}:{request.url.port}" == self.host:
            request.headers["Authorization"] = "Bearer t0k3n"
        yield request


async def test_redirects_drop_private_headers_across_origins_and_rerun_auth() -> None:
    from astroingest._archive_server import Reply

    with ArchiveServer() as api, ArchiveServer() as store:
        final = store.add("object.bin", b"payload")
        api.route("/hop", lambda r: Reply(302, headers={"Location": api.url("/data")}))
        api.route("/data", lambda r: Reply(307, headers={"Location": final}))
        auth = _CountingAuth(api.base_url.removeprefix("http://"))
        client = PoliteClient(
            make_client(Timeouts(), 8), HostBudgets(HostLimit("*", 4)), RetryPolicy(0)
        )
        async with client.client:
            response = await client.request(
                "GET", api.url("/hop"), headers={"PRIVATE-TOKEN": "abc123"}, auth=auth
            )
        assert response.content == b"payload"
        [first, second] = api.requests()
        assert first.headers["private-token"] == "abc123"  # same origin: kept
        assert second.headers["private-token"] == "abc123"
        assert second.headers["authorization"] == "Bearer t0k3n"
        [last] = store.requests()
        assert "private-token" not in last.headers  # another origin: dropped
        assert "authorization" not in last.headers  # the auth flow chose not to send it
        assert len(auth.hosts_seen) == 3  # the flow ran on every hop


async def test_redirect_loops_end_with_a_clear_error() -> None:
    from astroingest._archive_server import Reply

    with ArchiveServer() as api:
        api.route("/loop", lambda r: Reply(302, headers={"Location": api.url("/loop")}))
        client = PoliteClient(
            make_client(Timeouts(), 8), HostBudgets(HostLimit("*", 4)), RetryPolicy(0)
        )
        async with client.client:
            with pytest.raises(HTTPStatusError, match="more than 10 redirects"):
                await client.request("GET", api.url("/loop"))
        assert api.count("/loop") == 11


async def test_error_bodies_are_kept_on_the_exception() -> None:
    from astroingest._archive_server import Reply

    with ArchiveServer() as api:
        api.route("/bad", lambda r: Reply.of_json({"title": "queued requests limit"}, status=400))
        client = PoliteClient(
            make_client(Timeouts(), 8), HostBudgets(HostLimit("*", 4)), RetryPolicy(0)
        )
        async with client.client:
            with pytest.raises(HTTPStatusError) as info:
                await client.request("POST", api.url("/bad"))
    assert info.value.status_code == 400
    assert b"queued requests limit" in info.value.body


async def test_the_shared_client_keeps_no_cookies_between_sources() -> None:
    from astroingest._archive_server import Reply

    with ArchiveServer() as api:
        api.route(
            "/login",
            lambda r: Reply(200, b"ok", headers={"Set-Cookie": "JSESSIONID=s3cr3t; Path=/"}),
        )
        api.route("/data", lambda r: Reply(200, r.headers.get("cookie", "none").encode()))
        client = PoliteClient(
            make_client(Timeouts(), 8), HostBudgets(HostLimit("*", 4)), RetryPolicy(0)
        )
        async with client.client:
            await client.request("POST", api.url("/login"))
            response = await client.request("GET", api.url("/data"))
    assert response.content == b"none"


async def test_cookies_live_for_one_redirect_chain_only() -> None:
    from astroingest._archive_server import Reply

    with ArchiveServer() as api:
        data = api.url("/data")
        api.route(
            "/login",
            lambda r: Reply(302, headers={"Location": data, "Set-Cookie": "session=abc; Path=/"}),
        )
        api.route("/data", lambda r: Reply(200, r.headers.get("cookie", "none").encode()))
        client = PoliteClient(
            make_client(Timeouts(), 8), HostBudgets(HostLimit("*", 4)), RetryPolicy(0)
        )
        async with client.client:
            chained = await client.request("GET", api.url("/login"))
            later = await client.request("GET", data)
    assert chained.content == b"session=abc"  # carried to the next hop of the same chain
    assert later.content == b"none"  # not kept for the next request


async def test_a_single_attempt_request_is_not_retried_and_a_redirect_can_be_read() -> None:
    from astroingest._archive_server import Reply

    with ArchiveServer() as api:
        api.route("/async", lambda r: Reply(303, headers={"Location": api.url("/async/J1")}))
        api.route("/busy", lambda r: Reply(503))
        client = PoliteClient(
            make_client(Timeouts(), 8), HostBudgets(HostLimit("*", 4)), RetryPolicy(3, floor=0.01)
        )
        async with client.client:
            submitted = await client.request(
                "POST", api.url("/async"), retry=False, follow_redirects=False
            )
            with pytest.raises(RetryableError):
                await client.request("POST", api.url("/busy"), retry=False)
    assert submitted.status_code == 303
    assert submitted.headers["location"].endswith("/async/J1")
    assert api.count("/async/J1") == 0
    assert api.count("/busy") == 1


def test_proxy_settings_from_the_environment_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.org:3128")
    client = make_client(Timeouts(), 8)
    assert not isinstance(client._transport, ShardedTransport)  # httpx routes via its proxy mounts
    assert any(transport is not None for transport in client._mounts.values())
    monkeypatch.delenv("HTTPS_PROXY")
    for name in ("HTTP_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(make_client(Timeouts(), 8)._transport, ShardedTransport)


async def test_assets_are_fetched_as_stored_not_decoded(local_archive: ArchiveServer) -> None:
    from astroingest import Asset, Conditions

    local_archive.add(
        "data.csv.gz", b"\\x1f\\x8b fake gzip bytes", headers={"Content-Encoding": "gzip"}
    )
    client = PoliteClient(
        make_client(Timeouts(), 8), HostBudgets(HostLimit("*", 4)), RetryPolicy(0)
    )
    async with (
        client.client,
        client.open_asset(Asset(url=local_archive.url("data.csv.gz"), key="k"), Conditions()),
    ):
        pass
    [request] = local_archive.requests("data.csv.gz")
    assert request.headers["accept-encoding"] == "identity"
