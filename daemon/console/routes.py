"""The console on the HTTP API: its routes, its cookie sessions and its periodic status frames.

Mounted like the admin routes (``daemon/api/admin_routes.py``).  ``Console`` is also the API's
``session_auth``: for a /v1/* request with no X-API-Key or Authorization, the ``da_console``
cookie stands for the credential its session signed in with.  A cookie request that could
change something (not GET/HEAD/OPTIONS) must carry the session's X-CSRF-Token as well, since a
browser attaches the cookie to whatever a page makes it send.  The credential is checked again
on every request; when it no longer holds the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from daemon import __version__
from daemon.api.http_api import ApiRequest, ApiResponse, HttpApi
from daemon.console.events import EventBus, Subscription, Viewer, iso
from daemon.console.overview import HubFacts, Overview
from daemon.console.sessions import SAFE_METHODS, Session, SessionStore, cookie_token, expired_cookie, set_cookie
from daemon.console.static import StaticFiles
from daemon.core.envelope import Credentials, Principal
from daemon.core.errors import HubError, PermissionDenied, Unauthenticated, ValidationError
from daemon.core.i18n import t
from daemon.metering.ledger.process import LedgerProcess
from daemon.runtime.config import HubConfig
from daemon.tenancy.authn import Authenticator
from daemon.tenancy.rbac import is_cross_tenant
from daemon.tenancy.store import TenancyStore

log = logging.getLogger("democratic_ai.console")

CONSOLE_READ = "console:read"
SESSION_PATH = "/v1/console/session"
MAX_USAGE_MINUTES = 1440


def tenants_with_login(store: TenancyStore, email: str) -> list[str]:
    """The names of the tenants where ``email`` may log in (the store's thread)."""
    return [tenant.name for tenant in store.list_tenants() if store.find_login(tenant.name, email) is not None]


class Console:
    """The console's routes and sessions on ``api``; ``run`` publishes the periodic status frames."""

    def __init__(self, api: HttpApi, overview: Overview, authenticator: Authenticator, *,
                 sessions: SessionStore | None = None, bus: EventBus | None = None,
                 static: StaticFiles | None = None, clock: Callable[[], float] = time.time,
                 interval_s: float = 2.0, peer_interval_s: float = 5.0, verify_every_s: float = 3600.0) -> None:
        self.api = api
        self.overview = overview
        self.auth = authenticator
        self.sessions = sessions if sessions is not None else SessionStore()
        self.bus = bus if bus is not None else EventBus(clock=clock)
        self.static = static if static is not None else StaticFiles()
        self.clock = clock
        self.interval_s = interval_s
        self.peer_interval_s = peer_interval_s
        self.verify_every_s = verify_every_s
        #: the HTTP door's open WebSockets, watchers included (the hub sets it)
        self.connections: Callable[[], int] = lambda: len(self.bus)
        # one renewal of a person's access token at a time: a refresh token used twice revokes its family
        self._refreshing = asyncio.Lock()

    def mount(self) -> None:
        """Add the console's routes to the API, make it the API's session authority and feed it calls."""
        api = self.api
        api.add("/", GET=self.get_root)
        api.add("/console", GET=self.get_page)
        api.add("/console/assets/{name}", GET=self.get_asset)
        api.add("/console/i18n/{lang}.json", GET=self.get_language)
        api.add(SESSION_PATH, POST=self.post_session, DELETE=self.delete_session)
        api.add("/v1/console/overview", GET=self.get_overview)
        api.add("/v1/console/usage", GET=self.get_usage)
        api.session_auth = self
        api.pipeline.call_feed = self.bus

    # -- the API's session authority -------------------------------------------------------------
    async def apply(self, request: ApiRequest) -> ApiRequest:
        """``request`` with its session's credential when it came with the console cookie and no other.

        PERMISSION_DENIED (reason csrf) for a cookie request that changes something without the
        session's X-CSRF-Token.  An unknown or expired cookie changes nothing: the route then
        answers as it does to anyone without credentials.
        """
        # the API's own clients send no cookie: for them this is two string checks
        cookie = request.header("cookie")
        if not cookie or not request.path.startswith("/v1/") or request.credentials.present:
            return request
        token = cookie_token(cookie)
        session = self.sessions.get(token, self.clock()) if token else None
        if session is None or (request.method == "POST" and request.path == SESSION_PATH):
            return request
        if request.method not in SAFE_METHODS and not session.csrf_ok(request.header("x-csrf-token")):
            raise PermissionDenied(t("errors.console.csrf"), {"reason": "csrf"})
        if session.needs_refresh(self.clock()):
            session = await self._renew(session, request)
        headers = {name.lower(): value for name, value in request.headers.items()}
        if session.credentials.api_key:
            headers["x-api-key"] = session.credentials.api_key
        else:
            headers["authorization"] = f"Bearer {session.credentials.bearer}"
        return ApiRequest(request.method, request.path, headers, request.body, request.query, request.remote,
                          request.door, request.secure)

    def rejected(self, request: ApiRequest) -> None:
        """The request's credential was refused: when it was a session's, that session is over."""
        token = cookie_token(request.header("cookie"))
        session = self.sessions.get(token, self.clock()) if token else None
        if session is not None and request.credentials == session.credentials:
            self.sessions.drop(token)

    async def _renew(self, session: Session, request: ApiRequest) -> Session:
        """A fresh access token for a person's session (its refresh token rotates with it)."""
        async with self._refreshing:
            current = self.sessions.get(session.token, self.clock())
            if current is None or not current.needs_refresh(self.clock()):
                return current or session
            assert current.refresh_token is not None
            try:
                pair = await self.auth.refresh(current.refresh_token, ip=request.remote,
                                               user_agent=request.header("user-agent"))
            except HubError:
                self.sessions.drop(current.token)
                raise
            renewed = Session(current.token, current.csrf_token, Credentials(bearer=pair["access_token"]),
                              current.role, current.tenant_id, current.user_id, current.expires_at,
                              pair["refresh_token"], self.clock() + float(pair["expires_in"]))
            self.sessions.replace(renewed)
            return renewed

    async def watcher(self, request: ApiRequest) -> tuple[Subscription, ApiRequest]:
        """A live-feed subscription for the caller of ``request`` (header or cookie), who needs console:read.

        Returns ``request`` too: the door passes it to ``recheck`` while the socket stays open.
        """
        return self.bus.subscribe(await self.recheck(request)), request

    async def recheck(self, request: ApiRequest) -> Viewer:
        """The watcher behind ``request`` (cookie or headers) as of now; a refused session ends here."""
        request = await self.apply(request)
        try:
            return await self.viewer(request)
        except Unauthenticated:
            self.rejected(request)
            raise

    async def viewer(self, request: ApiRequest) -> Viewer:
        """Authenticate the request's credential now and require console:read."""
        principal = await self.api.pipeline.authenticate(request.credentials, ip=request.remote,
                                                         user_agent=request.header("user-agent"))
        self.auth.authorize(principal, CONSOLE_READ)
        return viewer_of(principal)

    # -- routes ----------------------------------------------------------------------------------
    async def get_root(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """``/``: to the console."""
        return ApiResponse(302, {"location": "/console", "content-type": "text/plain; charset=utf-8"},
                           b"see /console\n")

    async def get_page(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """``/console``: the page (public: it holds no data, it asks for credentials)."""
        return self.static.page(request)

    async def get_asset(self, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
        """``/console/assets/{name}``."""
        return self.static.asset(request, match["name"])

    async def get_language(self, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
        """``/console/i18n/{lang}.json``."""
        return self.static.language(request, match["lang"])

    async def post_session(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """Sign in with ``{"api_key"}`` or ``{"email", "password"[, "tenant"]}``: a session cookie and its CSRF token.

        UNAUTHENTICATED for bad credentials (throttled and audited like any login), PERMISSION_DENIED
        for a role without console:read.
        """
        body = await request.json_async()
        if not isinstance(body, dict):
            raise ValidationError(t("errors.console.sign_in_body"), {"pointer": ""})
        ip, ua = request.remote, request.header("user-agent")
        refresh_token: str | None = None
        access_expires_at: float | None = None
        if body.get("api_key"):
            if not isinstance(body["api_key"], str):
                raise ValidationError(t("errors.console.sign_in_body"), {"pointer": "/api_key"})
            credentials = Credentials(api_key=body["api_key"])
        elif body.get("email") or body.get("password"):
            email, password, tenant = body.get("email"), body.get("password"), body.get("tenant")
            if not all(isinstance(v, str) for v in (email, password)) or not isinstance(tenant, str | None):
                raise ValidationError(t("errors.console.sign_in_body"), {"pointer": ""})
            assert isinstance(email, str) and isinstance(password, str)
            if not tenant:
                store = self.overview.facts.store
                found = await store.run(tenants_with_login, store, email)
                tenant = found[0] if len(found) == 1 else ""  # none or several: the login fails as any bad one
            pair = await self.auth.login(email, password, tenant, ip=ip, user_agent=ua)
            credentials = Credentials(bearer=pair["access_token"])
            refresh_token = pair["refresh_token"]
            access_expires_at = self.clock() + float(pair["expires_in"])
        else:
            raise ValidationError(t("errors.console.sign_in_body"), {"pointer": ""})
        principal = await self.api.pipeline.authenticate(credentials, ip=ip, user_agent=ua)
        try:
            self.auth.authorize(principal, CONSOLE_READ)
        except PermissionDenied:
            if refresh_token is not None:  # the tokens just issued would only lie around
                await self._revoke_tokens(credentials, refresh_token, request)
            raise
        session = self.sessions.create(credentials, role=principal.role, tenant_id=principal.tenant_id,
                                       user_id=principal.user_id, now=self.clock(), refresh_token=refresh_token,
                                       access_expires_at=access_expires_at)
        return ApiResponse.json(
            {"role": principal.role, "tenant_id": principal.tenant_id, "user_id": principal.user_id,
             "csrf_token": session.csrf_token, "expires_at": iso(session.expires_at)},
            headers={"set-cookie": set_cookie(session.token, secure=request.secure), "cache-control": "no-store"})

    async def delete_session(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """Sign out: the session ends (a person's tokens are revoked) and the browser forgets the cookie."""
        token = cookie_token(request.header("cookie"))
        session = self.sessions.drop(token) if token else None
        if session is not None and session.refresh_token is not None:
            await self._revoke_tokens(session.credentials, session.refresh_token, request)
        return ApiResponse(204, {"set-cookie": expired_cookie(secure=request.secure), "cache-control": "no-store"})

    async def _revoke_tokens(self, credentials: Credentials, refresh_token: str, request: ApiRequest) -> None:
        for token in (credentials.bearer, refresh_token):
            if token:
                with contextlib.suppress(HubError):  # one already revoked or expired is as good
                    await self.auth.revoke(token, ip=request.remote, user_agent=request.header("user-agent"))

    async def get_overview(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """``/v1/console/overview`` (console:read): node, modules, tenants, ledger and peers, scoped."""
        viewer = await self.viewer(request)
        return ApiResponse.json(await self.overview.overview(viewer), headers={"cache-control": "no-store"})

    async def get_usage(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """``/v1/console/usage?minutes=60`` (console:read): calls per minute, by tenant and action."""
        viewer = await self.viewer(request)
        raw = request.query.get("minutes", "60")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_USAGE_MINUTES:
            raise ValidationError(t("errors.console.minutes", limit=MAX_USAGE_MINUTES), {"parameter": "minutes"})
        return ApiResponse.json(await self.overview.usage(viewer, int(raw)), headers={"cache-control": "no-store"})

    # -- the periodic frames ---------------------------------------------------------------------
    async def run(self) -> None:
        """Verify the ledger now and hourly; while anyone watches, status frames every ``interval_s``."""
        loop = asyncio.get_running_loop()
        next_verify = next_peers = loop.time()
        last_calls, last_errors, last_at = 0, 0, loop.time()
        pipeline = self.api.pipeline
        while True:
            now = loop.time()
            try:
                if now >= next_verify:
                    next_verify = now + self.verify_every_s
                    await self.overview.verify_ledger()
                if self.bus:
                    elapsed = max(now - last_at, 1e-3)
                    self._publish_status((pipeline.calls_total - last_calls) / elapsed,
                                         (pipeline.errors_total - last_errors) / elapsed)
                    await self.overview.refresh_latencies(max_age_s=10.0)
                    self.bus.publish_scoped("module_status", self.overview.modules)
                    if now >= next_peers:
                        next_peers = now + self.peer_interval_s
                        operator = Viewer("super_admin", "", everything=True)
                        self.bus.publish("peer_status", self.overview.peers(operator),
                                         only=lambda viewer: viewer.everything)
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed tick (a locked ledger file) must not end the feed for good
                log.exception("console status tick failed")
            last_calls, last_errors, last_at = pipeline.calls_total, pipeline.errors_total, now
            await asyncio.sleep(self.interval_s)

    def _publish_status(self, calls_per_s: float, errors_per_s: float) -> None:
        pipeline, overview = self.api.pipeline, self.overview
        state = overview.facts.readiness()
        self.bus.publish("node_status", {"uptime_s": round(self.clock() - overview.facts.started_at, 1),
                                         "in_flight": pipeline.in_flight, "ready": bool(state.get("ready")),
                                         "calls_total": pipeline.calls_total})
        self.bus.publish("network_stats", {"calls_per_s": round(calls_per_s, 2),
                                           "errors_per_s": round(errors_per_s, 2),
                                           "connections": self.connections()})


def viewer_of(principal: Principal) -> Viewer:
    """What ``principal`` may watch: everything for super_admin, its tenant otherwise."""
    return Viewer(principal.role, principal.tenant_id, is_cross_tenant(principal.permissions))


def start_console(stack: contextlib.AsyncExitStack, api: HttpApi, store: TenancyStore, ledger: LedgerProcess,
                  authenticator: Authenticator, config: HubConfig, *, readiness: Callable[[], dict[str, Any]],
                  endpoints: Callable[[], Mapping[str, Any]],
                  peers: Callable[[], list[dict[str, Any]] | None]) -> Console:
    """Mount the console on ``api`` and run its status task until ``stack`` closes.

    ``endpoints``: the hub's endpoints.json body (where each door listens); ``peers``: the fleet's
    peers, None on a hub that federates with nobody.
    """
    def doors() -> list[dict[str, str]]:
        where = endpoints()
        return [{"name": name, "url": str(where[name])} for name in ("http", "http3", "grpc") if where.get(name)]

    plans = config.plans
    facts = HubFacts(pipeline=api.pipeline, store=store, ledger=ledger, plans=plans,
                     default_plan="starter" if "starter" in plans else next(iter(plans)),
                     node_name=config.node.name or socket.gethostname()[:64], version=__version__,
                     started_at=time.time(), readiness=readiness, doors=doors, peers=peers)
    console = Console(api, Overview(facts), authenticator)
    console.mount()
    task = asyncio.get_running_loop().create_task(console.run(), name="console-status")

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(stop)
    return console
