"""The local archive server against a real HTTP client, faults included."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import astroingest._archive_server as archive_module
from astroingest._archive_server import ArchiveServer

BODY = bytes(range(256)) * 40  # 10240 bytes, every byte value, so corruption is visible
LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"


@pytest.fixture
def server() -> Iterator[ArchiveServer]:
    with ArchiveServer() as srv:
        yield srv


def _client(**kwargs: Any) -> httpx.Client:
    # Plain HTTP only: skipping the CA bundle saves ~50 ms per client.
    kwargs.setdefault("timeout", 5.0)
    return httpx.Client(verify=False, **kwargs)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with _client() as c:
        yield c


def _zeros(size: int) -> Iterator[bytes]:
    # A fresh chunk each time: if the server kept them, the memory would show.
    for pos in range(0, size, 65536):
        yield bytes(min(65536, size - pos))


def _counting(size: int) -> Iterator[bytes]:
    # Odd-sized chunks, so ranges cross chunk boundaries.
    data = bytes(i % 251 for i in range(size))
    for pos in range(0, size, 1000):
        yield data[pos : pos + 1000]


def _drain(response: httpx.Response, into: bytearray) -> None:
    for chunk in response.iter_raw():
        into += chunk


# -- plain service --------------------------------------------------------------------


def test_get_returns_body_and_archive_headers(server: ArchiveServer, client: httpx.Client) -> None:
    url = server.add("data/a.fits", BODY, content_type="application/fits")
    assert url == f"{server.base_url}/data/a.fits"
    assert server.url("/data/a.fits") == url

    response = client.get(url)

    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    assert response.content == BODY
    assert response.headers["content-length"] == str(len(BODY))
    assert response.headers["content-type"] == "application/fits"
    assert response.headers["etag"] == f'"{hashlib.sha256(BODY).hexdigest()[:16]}"'
    assert response.headers["last-modified"] == LAST_MODIFIED
    assert response.headers["accept-ranges"] == "bytes"
    assert "close" not in response.headers.get("connection", "")
    [record] = server.requests("data/a.fits")
    assert (record.method, record.path, record.status) == ("GET", "/data/a.fits", 200)
    assert record.headers["host"].startswith("127.0.0.1:")


def test_explicit_validators_and_extra_headers(server: ArchiveServer, client: httpx.Client) -> None:
    when = datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC)
    url = server.add(
        "x",
        b"abc",
        etag="v1",
        last_modified=when,
        headers={"X-Archive": "yes", "Accept-Ranges": "none"},
    )
    response = client.get(url)
    assert response.headers["etag"] == '"v1"'
    assert response.headers["last-modified"] == "Sat, 06 May 2023 07:08:09 GMT"
    assert response.headers["x-archive"] == "yes"
    assert response.headers.get_list("accept-ranges") == ["none"]

    bare = client.get(server.add("y", b"abc", etag=None, last_modified=None))
    assert "etag" not in bare.headers
    assert "last-modified" not in bare.headers


def test_add_json_and_query_routes(server: ArchiveServer, client: httpx.Client) -> None:
    url = server.add_json("api/search?q=m31", {"results": [1, 2]})
    server.add_json("api/search", {"results": []})
    assert client.get(url).json() == {"results": [1, 2]}
    other = client.get(server.url("api/search?q=other"))
    assert other.json() == {"results": []}
    assert other.headers["content-type"] == "application/json"
    assert server.count("api/search") == 2
    assert server.count("api/search?q=m31") == 1


def test_head_sends_headers_only(server: ArchiveServer, client: httpx.Client) -> None:
    url = server.add("a", BODY)
    response = client.head(url)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(BODY))
    assert response.content == b""
    # The connection is still usable: HEAD left nothing unread on it.
    assert client.get(url).content == BODY
    assert [r.method for r in server.requests("a")] == ["HEAD", "GET"]


def test_unknown_path_is_404(server: ArchiveServer, client: httpx.Client) -> None:
    response = client.get(server.url("nope"))
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert b"404" in response.content
    assert server.requests("nope")[0].status == 404


def test_add_rejects_body_and_generator_together(server: ArchiveServer) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        server.add("a", b"x", generator=(1, _zeros))
    with pytest.raises(ValueError, match="exactly one"):
        server.add("a")


# -- conditional requests ----------------------------------------------------------------


@pytest.mark.parametrize(
    "if_none_match",
    ["ETAG", "W/ETAG", '"other", ETAG', "*"],
)
def test_if_none_match_gives_304(
    server: ArchiveServer, client: httpx.Client, if_none_match: str
) -> None:
    url = server.add("a", BODY, etag='"abc"')
    response = client.get(url, headers={"If-None-Match": if_none_match.replace("ETAG", '"abc"')})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == '"abc"'
    assert client.get(url).status_code == 200  # keep-alive survived the bodiless 304


def test_if_none_match_mismatch_gives_200_and_beats_if_modified_since(
    server: ArchiveServer, client: httpx.Client
) -> None:
    url = server.add("a", BODY, etag='"abc"')
    response = client.get(
        url,
        headers={"If-None-Match": '"zzz"', "If-Modified-Since": "Tue, 01 Jan 2030 00:00:00 GMT"},
    )
    assert response.status_code == 200
    assert response.content == BODY


@pytest.mark.parametrize(
    ("since", "status"),
    [
        (LAST_MODIFIED, 304),
        ("Tue, 01 Jan 2030 00:00:00 GMT", 304),
        ("Sun, 31 Dec 2023 23:59:59 GMT", 200),
        ("not a date", 200),
    ],
)
def test_if_modified_since(
    server: ArchiveServer, client: httpx.Client, since: str, status: int
) -> None:
    url = server.add("a", BODY)
    response = client.get(url, headers={"If-Modified-Since": since})
    assert response.status_code == status
    assert response.content == (b"" if status == 304 else BODY)


# -- ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "start", "stop"),
    [("bytes=2-5", 2, 6), ("bytes=10000-", 10000, 10240), ("bytes=-3", 10237, 10240),
     ("bytes=100-999999", 100, 10240), ("bytes=0-0", 0, 1)],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["bytes", "generator"])
def test_range_gives_206(
    server: ArchiveServer, client: httpx.Client, spec: str, start: int, stop: int, kind: str
) -> None:
    if kind == "bytes":
        url, expected = server.add("a", BODY), BODY
    else:
        url = server.add("a", generator=(len(BODY), _counting))
        expected = b"".join(_counting(len(BODY)))
    response = client.get(url, headers={"Range": spec})
    assert response.status_code == 206
    assert response.content == expected[start:stop]
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(BODY)}"
    assert response.headers["content-length"] == str(stop - start)


@pytest.mark.parametrize(
    "spec", ["bytes=10240-", "bytes=5-2", "bytes=abc", "bytes=0-1,3-4", "bytes=-0"]
)
def test_bad_range_gives_416(server: ArchiveServer, client: httpx.Client, spec: str) -> None:
    url = server.add("a", BODY)
    response = client.get(url, headers={"Range": spec})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(BODY)}"


def test_unknown_range_unit_is_ignored(server: ArchiveServer, client: httpx.Client) -> None:
    url = server.add("a", BODY)
    response = client.get(url, headers={"Range": "items=0-1"})
    assert response.status_code == 200
    assert response.content == BODY


def test_if_range(server: ArchiveServer, client: httpx.Client) -> None:
    url = server.add("a", BODY, etag='"v1"')
    same = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"v1"'})
    assert (same.status_code, same.content) == (206, BODY[:10])
    changed = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"v0"'})
    assert (changed.status_code, changed.content) == (200, BODY)
    by_date = client.get(url, headers={"Range": "bytes=0-9", "If-Range": LAST_MODIFIED})
    assert by_date.status_code == 206


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 404, 403])
def test_status_fault(server: ArchiveServer, client: httpx.Client, status: int) -> None:
    url = server.add("a", BODY)
    server.fault("a", str(status))
    response = client.get(url)
    assert response.status_code == status
    assert response.content.startswith(str(status).encode())
    assert "retry-after" not in response.headers
    assert client.get(url).content == BODY


@pytest.mark.parametrize(
    ("fault", "retry_after"), [("429", None), ("429:0", "0"), ("429:1", "1"), ("503:2", "2")]
)
def test_retry_after_fault(
    server: ArchiveServer, client: httpx.Client, fault: str, retry_after: str | None
) -> None:
    url = server.add("a", BODY)
    server.fault("a", fault)
    response = client.get(url)
    assert response.status_code == int(fault[:3])
    assert response.headers.get("retry-after") == retry_after


def test_reset_fault_is_a_transport_error(server: ArchiveServer, client: httpx.Client) -> None:
    url = server.add("a", BODY)
    server.fault("a", "reset")
    with pytest.raises(httpx.TransportError):
        client.get(url)
    assert server.requests("a")[0].status is None
    assert client.get(url).content == BODY


def test_truncate_fault(server: ArchiveServer, client: httpx.Client) -> None:
    url = server.add("a", BODY)
    server.fault("a", "truncate")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    assert client.get(url).content == BODY


def test_truncate_after_fault_sends_exactly_n_bytes(
    server: ArchiveServer, client: httpx.Client
) -> None:
    url = server.add("a", BODY)
    server.fault("a", "truncate_after:3000")
    received = bytearray()
    with client.stream("GET", url) as response:
        assert response.headers["content-length"] == str(len(BODY))
        with pytest.raises(httpx.RemoteProtocolError):
            _drain(response, received)
    assert bytes(received) == BODY[:3000]


def test_stall_fault_times_out_the_reader(server: ArchiveServer) -> None:
    url = server.add("a", BODY)
    server.fault("a", "stall:3")
    received = bytearray()
    started = time.monotonic()
    with _client(timeout=httpx.Timeout(5.0, read=0.3)) as c, c.stream("GET", url) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            _drain(response, received)
    assert time.monotonic() - started < 2.0
    assert bytes(received) == BODY[:1024]


def test_stall_after_fault_stalls_at_the_given_offset(server: ArchiveServer) -> None:
    url = server.add("a", BODY)
    server.fault("a", "stall_after:3000:3")
    received = bytearray()
    with (
        _client(timeout=httpx.Timeout(5.0, read=0.3)) as c,
        c.stream("GET", url) as response,
        pytest.raises(httpx.ReadTimeout),
    ):
        _drain(response, received)
    assert bytes(received) == BODY[:3000]


def test_delay_fault_delays_then_serves(server: ArchiveServer, client: httpx.Client) -> None:
    url = server.add("a", BODY)
    server.fault("a", "delay:0.3")
    started = time.monotonic()
    response = client.get(url)
    assert time.monotonic() - started >= 0.3
    assert response.content == BODY


def test_html_fault_serves_a_login_page(server: ArchiveServer, client: httpx.Client) -> None:
    url = server.add("a", BODY)
    server.fault("a", "html")
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")
    assert "<title>Login</title>" in response.text


def test_corrupt_fault_flips_bytes_but_keeps_length(
    server: ArchiveServer, client: httpx.Client
) -> None:
    url = server.add("a", BODY)
    server.fault("a", "corrupt")
    response = client.get(url)
    assert response.status_code == 200
    assert len(response.content) == len(BODY)
    assert all(a != b for a, b in zip(response.content, BODY, strict=True))


def test_faults_are_consumed_in_order_then_normal_service(
    server: ArchiveServer, client: httpx.Client
) -> None:
    url = server.add("a", BODY)
    server.fault("a", "503", "429:0")
    server.fault("/a", "corrupt")
    statuses = []
    bodies = []
    for _ in range(4):
        response = client.get(url)
        statuses.append(response.status_code)
        bodies.append(response.content == BODY)
    assert statuses == [503, 429, 200, 200]
    assert bodies == [False, False, False, True]
    assert server.count("a") == 4
    assert [r.status for r in server.requests("a")] == [503, 429, 200, 200]


def test_fault_on_unknown_path_then_404(server: ArchiveServer, client: httpx.Client) -> None:
    server.fault("later", "503")
    assert client.get(server.url("later")).status_code == 503
    assert client.get(server.url("later")).status_code == 404


@pytest.mark.parametrize("bad", ["boom", "99", "600", "429:x", "stall", "delay:-1", "reset:1"])
def test_unknown_faults_are_refused(server: ArchiveServer, bad: str) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        server.fault("a", "500", bad)
    assert server.requests() == []


def test_required_header(server: ArchiveServer, client: httpx.Client) -> None:
    url = server.add("a", BODY)
    server.require_header("Authorization", "Bearer s3cret")
    denied = client.get(url)
    assert denied.status_code == 401
    assert denied.headers["content-type"].startswith("text/html")
    assert "<title>Login</title>" in denied.text
    wrong = client.get(url, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    allowed = client.get(url, headers={"authorization": "Bearer s3cret"})
    assert (allowed.status_code, allowed.content) == (200, BODY)


# -- concurrency, streaming, lifecycle ------------------------------------------------------


def test_latency_overlaps_across_connections(server: ArchiveServer, client: httpx.Client) -> None:
    url = server.add("a", b"x")
    server.set_latency(0.2)
    assert server.latency == 0.2
    statuses: list[int] = []
    lock = threading.Lock()

    def fetch() -> None:
        # One pooled client: concurrent requests each get their own connection.
        status = client.get(url).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=fetch) for _ in range(10)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert statuses == [200] * 10
    # Serialised, ten responses would take 2 s.
    assert 0.2 <= elapsed < 1.0


def test_generated_body_is_streamed_in_bounded_memory(
    server: ArchiveServer, client: httpx.Client
) -> None:
    size = 64 * 1024 * 1024
    url = server.add("big", generator=(size, _zeros))
    received = 0
    tracemalloc.start()
    try:
        with client.stream("GET", url) as response:
            assert response.headers["etag"] == f'"gen-{size}"'
            assert response.headers["content-length"] == str(size)
            for chunk in response.iter_raw(65536):
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    assert peak < 8 * 1024 * 1024


def test_client_disconnect_mid_body_is_harmless(
    server: ArchiveServer, client: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    url = server.add("big", generator=(32 * 1024 * 1024, _zeros))
    with _client() as other, other.stream("GET", url) as response:
        next(response.iter_raw())
    assert client.get(server.add("small", b"ok")).content == b"ok"
    time.sleep(0.1)
    assert capfd.readouterr().err == ""


def test_stop_is_idempotent_and_final(client: httpx.Client) -> None:
    srv = ArchiveServer()
    url = srv.add("a", b"x")  # URLs are known before start
    with srv:
        assert client.get(url).content == b"x"
    srv.stop()
    with _client() as fresh, pytest.raises(httpx.ConnectError):
        fresh.get(url)
    with pytest.raises(RuntimeError):
        srv.start()
    ArchiveServer().stop()  # never started


def test_stop_does_not_wait_for_idle_keep_alive_connections(client: httpx.Client) -> None:
    srv = ArchiveServer().start()
    assert client.get(srv.add("a", b"x")).status_code == 200
    started = time.monotonic()
    srv.stop()  # the client still holds its pooled connection open
    assert time.monotonic() - started < 0.5


def test_stop_does_not_wait_for_a_stall() -> None:
    srv = ArchiveServer().start()
    url = srv.add("a", BODY)
    srv.fault("a", "stall:30")
    with _client() as c, c.stream("GET", url) as response:
        started = time.monotonic()
        srv.stop()
        with pytest.raises(httpx.TransportError):
            response.read()
    assert time.monotonic() - started < 2.0


def test_add_file_serves_ranges_from_disk(
    server: ArchiveServer, client: httpx.Client, tmp_path: Path
) -> None:
    file = tmp_path / "cube.json"
    file.write_bytes(BODY)
    url = server.add_file("cube.json", file)
    whole = client.get(url)
    assert whole.content == BODY
    assert whole.headers["content-type"] == "application/json"
    part = client.get(url, headers={"Range": "bytes=70000-"})
    assert part.status_code == 416
    part = client.get(url, headers={"Range": "bytes=5000-6000"})
    assert part.content == BODY[5000:6001]


def test_cli_serves_a_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "image.fits").write_bytes(BODY)
    (tmp_path / "index.json").write_text('{"ok": true}')
    core = Path(archive_module.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(core), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "astroingest._archive_server", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        with _client(base_url=base_url) as c:
            assert c.get("/sub/image.fits").content == BODY
            index = c.get("/index.json")
            assert index.json() == {"ok": True}
            assert index.headers["content-type"] == "application/json"
            assert c.get("/missing").status_code == 404
    finally:
        proc.terminate()
        returncode = proc.wait(timeout=10)
    assert returncode == 0


def test_routes_play_an_api_flow(server: ArchiveServer, client: httpx.Client) -> None:
    from astroingest._archive_server import ArchiveRequest, Reply

    jobs: dict[str, str] = {}

    def submit(request: ArchiveRequest) -> Reply:
        if request.method == "DELETE":
            jobs.clear()
            return Reply(204)
        jobs["1"] = request.form()["QUERY"]
        return Reply(303, headers={"Location": server.url("/async/1")})

    def job(request: ArchiveRequest) -> Reply:
        return Reply.of_json({"query": jobs.get("1"), "page": request.params.get("page")})

    server.route("/async", submit, methods=["POST"])
    server.route("/async/1", job, methods=["GET"])
    server.route("/async/1", submit, methods=["DELETE"])
    server.fault("/async/1", "503")

    created = client.post(server.url("/async"), data={"QUERY": "select 1"})
    assert created.status_code == 303
    assert created.headers["location"].endswith("/async/1")
    assert client.get(server.url("/async/1?page=2")).status_code == 503  # faults apply to routes
    assert client.get(server.url("/async/1?page=2")).json() == {"query": "select 1", "page": "2"}
    assert client.delete(server.url("/async/1")).status_code == 204
    assert jobs == {}
    assert client.put(server.url("/nothing"), content=b"x").status_code == 405
    assert [r.method for r in server.requests("/async/1")] == ["GET", "GET", "DELETE"]
