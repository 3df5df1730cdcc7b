"""The console on the HTTP API: its routes, its live feed's watchers and its periodic status frames.

Mounted like the admin routes (``daemon/api/admin_routes.py``).  Sessions, and the cookie
standing for a credential on every /v1/* request, are ``authority.ConsoleSessions``'s.
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
from daemon.console.authority import ConsoleSessions, origin_refused
from daemon.console.events import EventBus, Subscription, Viewer
from daemon.console.overview import HubFacts, Overview
from daemon.console.static import StaticFiles
from daemon.core.errors import PermissionDenied, Unauthenticated, ValidationError
from daemon.core.i18n import t
from daemon.metering.ledger.process import LedgerProcess
from daemon.runtime.config import HubConfig
from daemon.tenancy.authn import Authenticator
from daemon.tenancy.store import TenancyStore

log = logging.getLogger("democratic_ai.console")

MAX_USAGE_MINUTES = 1440
MINUTES = re.compile(r"[0-9]{1,4}")
OPERATOR = Viewer("super_admin", "", everything=True)


class Console:
    """The console's routes on ``api`` and its live feed; ``run`` publishes the periodic status frames."""

    def __init__(self, api: HttpApi, overview: Overview, sessions: ConsoleSessions, *,
                 bus: EventBus | None = None, static: StaticFiles | None = None,
                 connections: Callable[[], int] | None = None, clock: Callable[[], float] = time.time,
                 interval_s: float = 2.0, peer_interval_s: float = 5.0, verify_every_s: float = 3600.0) -> None:
        self.api = api
        self.overview = overview
        self.sessions = sessions
        self.bus = bus if bus is not None else EventBus(clock=clock)
        self.static = static if static is not None else StaticFiles()
        self.clock = clock
        self.interval_s = interval_s
        self.peer_interval_s = peer_interval_s
        self.verify_every_s = verify_every_s
        #: the HTTP door's open WebSockets, watchers included
        self.connections = connections if connections is not None else lambda: len(self.bus)

    def mount(self) -> None:
        """Add the console's routes to the API, make its sessions the API's session authority, feed it calls."""
        api = self.api
        api.add("/", GET=self.get_root)
        api.add("/console", GET=self.get_page)
        api.add("/console/assets/{name}", GET=self.get_asset)
        api.add("/console/i18n/{lang}.json", GET=self.get_language)
        api.add("/v1/console/session", POST=self.post_session, DELETE=self.delete_session)
        api.add("/v1/console/overview", GET=self.get_overview)
        api.add("/v1/console/usage", GET=self.get_usage)
        api.session_auth = self.sessions
        api.pipeline.call_feed = self.bus

    # -- the live feed's watchers ----------------------------------------------------------------
    async def watcher(self, request: ApiRequest) -> tuple[Subscription, ApiRequest]:
        """A live-feed subscription for the caller of ``request`` (header or cookie), who needs console:read.

        With the cookie as its credential the upgrade must come from the hub's own page: no CORS
        rule guards a WebSocket, and the cookie goes along from a page on another port or subdomain.
        Returns ``request`` too: the door passes it to ``recheck`` while the socket stays open.
        """
        if request.header("cookie") and not request.credentials.present:
            if (refused := origin_refused(request, required=True)) is not None:
                raise refused
        return self.bus.subscribe(await self.recheck(request)), request

    async def recheck(self, request: ApiRequest) -> Viewer:
        """The watcher behind ``request`` (cookie or headers) as of now; a refused session ends here."""
        request = await self.sessions.apply(request)
        try:
            return await self.sessions.viewer(request)
        except Unauthenticated:
            await self.sessions.rejected(request)
            raise

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
        return await self.sessions.sign_in(request)

    async def delete_session(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """Sign out: the session ends (a person's tokens are revoked) and the browser forgets the cookie."""
        return await self.sessions.sign_out(request)

    async def get_overview(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """``/v1/console/overview`` (console:read): node, modules, tenants, ledger and peers, scoped."""
        viewer = await self.sessions.viewer(request)
        return ApiResponse.json(await self.overview.overview(viewer), headers={"cache-control": "no-store"})

    async def get_usage(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """``/v1/console/usage?minutes=60`` (console:read and billing:read): calls per minute, by tenant and action."""
        viewer = await self.sessions.viewer(request)
        if not viewer.billing:  # call counts are billing data: the API's /v1/usage asks the same
            raise PermissionDenied(t("errors.console.no_billing"), {"permission": "billing:read"})
        raw = request.query.get("minutes", "60")
        if not MINUTES.fullmatch(raw) or not 1 <= int(raw) <= MAX_USAGE_MINUTES:
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
                        self.bus.publish("peer_status", self.overview.peers(OPERATOR),
                                         only=lambda viewer: viewer.everything)
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed tick (a locked ledger file) must not end the feed for good
                log.exception("console status tick failed")
            last_calls, last_errors, last_at = pipeline.calls_total, pipeline.errors_total, now
            await asyncio.sleep(self.interval_s)

    def _publish_status(self, calls_per_s: float, errors_per_s: float) -> None:
        """The hub-wide numbers (all tenants' calls) go to its operators only; a tenant's watcher gets
        the node's uptime and readiness."""
        pipeline, overview = self.api.pipeline, self.overview
        state = overview.facts.readiness()
        node = {"uptime_s": round(self.clock() - overview.facts.started_at, 1), "ready": bool(state.get("ready"))}
        self.bus.publish("node_status", {**node, "in_flight": pipeline.in_flight, "calls_total": pipeline.calls_total},
                         only=lambda viewer: viewer.everything)
        self.bus.publish("node_status", node, only=lambda viewer: not viewer.everything)
        self.bus.publish("network_stats", {"calls_per_s": round(calls_per_s, 2),
                                           "errors_per_s": round(errors_per_s, 2),
                                           "connections": self.connections()}, only=lambda viewer: viewer.everything)


def start_console(stack: contextlib.AsyncExitStack, api: HttpApi, store: TenancyStore, ledger: LedgerProcess,
                  authenticator: Authenticator, config: HubConfig, *, readiness: Callable[[], dict[str, Any]],
                  endpoints: Callable[[], Mapping[str, Any]], peers: Callable[[], list[dict[str, Any]] | None],
                  connections: Callable[[], int]) -> Console:
    """Mount the console on ``api`` and run its status task until ``stack`` closes.

    ``endpoints``: the hub's endpoints.json body (where each door listens); ``peers``: the fleet's
    peers, None on a hub that federates with nobody; ``connections``: the HTTP door's open sockets.
    """
    def doors() -> list[dict[str, str]]:
        where = endpoints()
        return [{"name": name, "url": str(where[name])} for name in ("http", "http3", "grpc") if where.get(name)]

    plans = config.plans
    facts = HubFacts(pipeline=api.pipeline, store=store, ledger=ledger, plans=plans,
                     default_plan="starter" if "starter" in plans else next(iter(plans)),
                     node_name=config.node.name or socket.gethostname()[:64], version=__version__,
                     started_at=time.time(), readiness=readiness, doors=doors, peers=peers)
    sessions = ConsoleSessions(api.pipeline, authenticator, secure_cookie=config.http.console_secure_cookie)
    console = Console(api, Overview(facts), sessions, connections=connections)
    console.mount()
    task = asyncio.get_running_loop().create_task(console.run(), name="console-status")

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(stop)
    return console
