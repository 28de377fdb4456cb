"""``plugin = "esa.gaia"``: the ESA Gaia archive (TAP+), anonymous or logged in. ::

    [sources.gaia_nearby]
    plugin = "esa.gaia"
    query = "select top 1000 source_id, ra, dec, parallax from gaiadr3.gaia_source"
    format = "votable"
    # for user tables (user_<login>.*) and persistent jobs:
    # username = "jdoe"
    # password = "${GAIA_PASSWORD}"

``base_url`` (default ``https://gea.esac.esa.int/tap-server``) is the TAP+ server: TAP at
``<base_url>/tap``, login at ``<base_url>/login``, logout at ``<base_url>/logout``.

Sync or async: the archive answers sync queries up to 2000 rows, so with the default
``mode = "auto"`` a query runs sync when its outer ``SELECT TOP n`` (or ``maxrec``) is 2000
or less, and as an async job when the TOP is larger or there is none. ``mode = "sync"`` or
``"async"`` forces either.

Login: with ``username`` and ``password`` the plan first POSTs them as a form to
``/login``; the session cookie it gets back (``JSESSIONID``) is sent with every request of
this source (job submission, polls, the result download) and with no other source's: it
is taken out of the run's shared cookie jar and sent by :class:`SessionCookie`, and only
to the archive's own origin (``base_url``'s scheme, host and port): a redirect elsewhere,
or down to plain http, goes without it. 401/403
fails the source with "login … refused" (the password is never in a message). The session
is logged out (``POST /logout``) after the source's jobs are deleted. ``--dry-run`` does
not log in.

Compressed results: the archive's job documents say ``encoding="gzip"`` for results, and
its results can arrive as a gzip file. What lands is the decoded table under a ``.vot``
(``.csv``, ``.json``) key, checksummed as decoded: see :mod:`astroingest_plugins.tap`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any, Final

import httpx
from pydantic import model_validator

from astroingest import Asset, FetchError, HTTPStatusError, PlanContext, SourceType, hookimpl
from astroingest_plugins.tap import TapQueryConfig, TapService, plan_query

DEFAULT_BASE_URL: Final = "https://gea.esac.esa.int/tap-server"
PROVIDER: Final = "ESA Gaia archive"
SYNC_ROW_LIMIT: Final = 2000
"""Rows the archive returns from a sync query (astroquery's Gaia documentation)."""
CITATION: Final = (
    "How to cite and acknowledge Gaia: https://gea.esac.esa.int/archive/documentation/credits.html"
)
"""What the archive itself puts in its results' CITATION INFO and its job documents."""


class GaiaConfig(TapQueryConfig):
    """``plugin = "esa.gaia"``: one ADQL query; ``base_url`` overrides the TAP+ server root."""

    username: str | None = None
    """Gaia archive login, for user tables and persistent jobs (give ``password`` too)."""
    password: str | None = None
    """The login's password; write ``"${GAIA_PASSWORD}"`` and keep it in the environment."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> GaiaConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        return self


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


class SessionCookie(httpx.Auth):
    """A login session's cookie, on this source's requests to the archive only.

    The cookie is kept out of the engine's shared cookie jar, so no other source sends
    it; the engine runs this flow again on every redirect hop (the 303 after a job
    submission), so the session follows a redirect within the archive's origin (scheme,
    host and port of ``base_url``), and never one to another host or down to http.
    """

    def __init__(self, cookie: str, base_url: str) -> None:
        self._cookie = cookie
        self._origin = _origin(httpx.URL(base_url))

    def __repr__(self) -> str:
        return "SessionCookie(***)"

    def trusts(self, url: httpx.URL) -> bool:
        """Whether a request to ``url`` may carry the session: the archive's origin only."""
        return _origin(url) == self._origin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.trusts(request.url):
            request.headers["Cookie"] = self._cookie
        yield request


async def login(ctx: PlanContext, base: str, username: str, password: str) -> SessionCookie:
    """POST the credentials to ``<base>/login``; the session cookie, private to this source."""
    url = f"{base}/login"
    try:
        response = await ctx.request("POST", url, data={"username": username, "password": password})
    except HTTPStatusError as error:
        if error.status_code in (401, 403):
            raise FetchError(
                f"{PROVIDER}: login as {username!r} refused (HTTP {error.status_code}) at {url}: "
                "check username and password"
            ) from None
        raise FetchError(f"{PROVIDER}: login failed (HTTP {error.status_code}) at {url}") from None
    # This response's own Set-Cookie: the engine's client keeps no cookies between requests.
    cookies = list(response.cookies.jar)
    if not cookies:
        raise FetchError(
            f"{PROVIDER}: login at {url} answered HTTP {response.status_code} without a "
            "session cookie (JSESSIONID): check the base_url"
        )
    for cookie in cookies:
        ctx.add_secret(cookie.value or "")  # while it lasts, a session is as good as a password
    ctx.log.info("%s: logged in as %s", PROVIDER, username)
    return SessionCookie("; ".join(f"{c.name}={c.value}" for c in cookies), base)


def logout_later(ctx: PlanContext, base: str, session: SessionCookie) -> None:
    async def logout() -> None:
        await ctx.request("POST", f"{base}/logout", auth=session)
        ctx.log.info("%s: logged out", PROVIDER)

    ctx.on_finish(logout)


async def plan(config: GaiaConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
    session = None
    if config.username is not None and config.password is not None:
        if ctx.dry_run:
            ctx.log.info("dry run: would log in to %s as %s", base, config.username)
        else:
            session = await login(ctx, base, config.username, config.password)
    service = TapService(
        base=f"{base}/tap", provider=PROVIDER, sync_row_limit=SYNC_ROW_LIMIT, auth=session
    )
    provenance = {"citation": CITATION, "authenticated": session is not None}
    try:
        async for asset in plan_query(
            ctx,
            service,
            config.query,
            config.format,
            config.mode,
            config.maxrec,
            config.polling(),
            provenance,
        ):
            yield asset
    finally:
        # Registered last so it runs after the job's DELETE, which needs the session.
        if session is not None:
            logout_later(ctx, base, session)


@hookimpl
def astroingest_source_types() -> list[SourceType[Any]]:
    return [
        SourceType(
            "esa.gaia",
            GaiaConfig,
            plan,
            "ESA Gaia archive TAP+: one ADQL query, sync up to 2000 rows, async beyond; login",
        )
    ]
