"""The console's session authority: signing in and out, and the cookie standing for a credential.

``ConsoleSessions`` is the API's ``session_auth``: for a /v1/* request with no X-API-Key or
Authorization, the ``da_console`` cookie stands for the credential its session signed in with.
A cookie request that could change something (not GET/HEAD/OPTIONS) must carry the session's
X-CSRF-Token as well, since a browser attaches the cookie to whatever a page makes it send.
The credential is checked again on every request; when it no longer holds, the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from daemon.api.http_api import ApiRequest, ApiResponse
from daemon.console.events import Viewer, iso
from daemon.console.sessions import (
    SAFE_METHODS,
    Session,
    SessionStore,
    cookie_token,
    expired_cookie,
    same_origin,
    set_cookie,
)
from daemon.core.envelope import Credentials, Principal
from daemon.core.errors import HubError, PermissionDenied, Unauthenticated, ValidationError
from daemon.core.i18n import t
from daemon.core.pipeline import Pipeline
from daemon.tenancy.authn import Authenticator
from daemon.tenancy.rbac import allows, is_cross_tenant

CONSOLE_READ = "console:read"
BILLING_READ = "billing:read"
SESSION_PATH = "/v1/console/session"


def viewer_of(principal: Principal) -> Viewer:
    """What ``principal`` may watch: everything for super_admin, its tenant otherwise; money with billing:read."""
    return Viewer(principal.role, principal.tenant_id, is_cross_tenant(principal.permissions),
                  billing=allows(principal.permissions, BILLING_READ), who=principal.subject)


def origin_refused(request: ApiRequest, *, required: bool) -> PermissionDenied | None:
    """PERMISSION_DENIED (reason origin) when the browser says another origin's page made ``request``."""
    if same_origin(request.header("origin"), request.header("sec-fetch-site"), request.header("host"),
                   request.secure, required=required):
        return None
    return PermissionDenied(t("errors.console.origin"), {"reason": "origin"})


class ConsoleSessions:
    """Cookie sessions over ``pipeline``'s authentication; ``secure_cookie`` forces the Secure flag."""

    def __init__(self, pipeline: Pipeline, authenticator: Authenticator, *, store: SessionStore | None = None,
                 clock: Callable[[], float] = time.time, secure_cookie: bool = False) -> None:
        self.pipeline = pipeline
        self.auth = authenticator
        self.store = store if store is not None else SessionStore()
        self.clock = clock
        self.secure_cookie = secure_cookie
        # one renewal of a person's access token at a time: a refresh token used twice revokes its family
        self._refreshing = asyncio.Lock()

    def session_of(self, request: ApiRequest) -> Session | None:
        """The live session whose cookie ``request`` carries, if any."""
        token = cookie_token(request.header("cookie"))
        return self.store.get(token, self.clock()) if token else None

    async def apply(self, request: ApiRequest) -> ApiRequest:
        """``request`` with its session's credential when it came with the console cookie and no other.

        PERMISSION_DENIED (reason csrf) for a cookie request that changes something without the
        session's X-CSRF-Token.  An unknown or expired cookie changes nothing: the route then
        answers as it does to anyone without credentials.
        """
        # the API's own clients send no cookie: for them this is two string checks
        if not request.header("cookie") or not request.path.startswith("/v1/") or request.credentials.present:
            return request
        session = self.session_of(request)
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

    async def rejected(self, request: ApiRequest) -> None:
        """Something in ``request`` was UNAUTHENTICATED: the session ends only if its own credential is.

        A bad token in a body (a refresh, a revoke) says nothing about the session: its credential
        is authenticated again, and only UNAUTHENTICATED ends it (a throttle or an outage does not).
        """
        session = self.session_of(request)
        if session is None or request.credentials != session.credentials:
            return
        try:
            await self.pipeline.authenticate(session.credentials, ip=request.remote,
                                             user_agent=request.header("user-agent"))
        except Unauthenticated:
            self.store.drop(session.token)
        except HubError:
            pass

    async def _renew(self, session: Session, request: ApiRequest) -> Session:
        """A fresh access token for a person's session (its refresh token rotates with it)."""
        async with self._refreshing:
            current = self.store.get(session.token, self.clock())
            if current is None or not current.needs_refresh(self.clock()):
                return current or session
            assert current.refresh_token is not None
            try:
                pair = await self.auth.refresh(current.refresh_token, ip=request.remote,
                                               user_agent=request.header("user-agent"))
            except Unauthenticated:  # the refresh token no longer holds; a throttle or outage is not that
                self.store.drop(current.token)
                raise
            renewed = Session(current.token, current.csrf_token, Credentials(bearer=pair["access_token"]),
                              current.role, current.tenant_id, current.user_id, current.expires_at,
                              pair["refresh_token"], self.clock() + float(pair["expires_in"]))
            self.store.replace(renewed)
            return renewed

    async def viewer(self, request: ApiRequest) -> Viewer:
        """Authenticate the request's credential now and require console:read."""
        principal = await self.pipeline.authenticate(request.credentials, ip=request.remote,
                                                     user_agent=request.header("user-agent"))
        self.auth.authorize(principal, CONSOLE_READ)
        return viewer_of(principal)

    async def sign_in(self, request: ApiRequest) -> ApiResponse:
        """``{"api_key"}`` or ``{"email", "password"[, "tenant"]}``: a session cookie and its CSRF token.

        Only JSON from the hub's own page (a form of another site cannot sign a browser in as
        someone else); a session the browser already had ends.
        """
        if request.header("content-type").split(";")[0].strip().lower() != "application/json":
            raise ValidationError(t("errors.console.sign_in_json"), {"header": "content-type"})
        if (refused := origin_refused(request, required=False)) is not None:
            raise refused
        body = await request.json_async()
        if not isinstance(body, dict):
            raise ValidationError(t("errors.console.sign_in_body"), {"pointer": ""})
        credentials, refresh_token, access_expires_at = await self._check_credentials(body, request)
        ip, ua = request.remote, request.header("user-agent")
        principal = await self.pipeline.authenticate(credentials, ip=ip, user_agent=ua)
        try:
            self.auth.authorize(principal, CONSOLE_READ)
        except PermissionDenied:
            if refresh_token is not None:  # the tokens just issued would only lie around
                await self._revoke_tokens(credentials, refresh_token, request)
            raise
        await self._end(request)
        session = self.store.create(credentials, role=principal.role, tenant_id=principal.tenant_id,
                                    user_id=principal.user_id, now=self.clock(), refresh_token=refresh_token,
                                    access_expires_at=access_expires_at)
        return ApiResponse.json(
            {"role": principal.role, "tenant_id": principal.tenant_id, "user_id": principal.user_id,
             "csrf_token": session.csrf_token, "expires_at": iso(session.expires_at)},
            headers={"set-cookie": set_cookie(session.token, secure=self._secure(request)),
                     "cache-control": "no-store"})

    async def _check_credentials(self, body: dict[str, Any], request: ApiRequest
                                 ) -> tuple[Credentials, str | None, float | None]:
        """The credential the body names (a person's is logged in: throttled and audited as any login)."""
        if body.get("api_key"):
            if not isinstance(body["api_key"], str):
                raise ValidationError(t("errors.console.sign_in_body"), {"pointer": "/api_key"})
            return Credentials(api_key=body["api_key"]), None, None
        if not (body.get("email") or body.get("password")):
            raise ValidationError(t("errors.console.sign_in_body"), {"pointer": ""})
        email, password, tenant = body.get("email"), body.get("password"), body.get("tenant")
        if not isinstance(email, str) or not isinstance(password, str) or not isinstance(tenant, str | None):
            raise ValidationError(t("errors.console.sign_in_body"), {"pointer": ""})
        pair = await self.auth.login(email, password, tenant or None, ip=request.remote,
                                     user_agent=request.header("user-agent"))
        return (Credentials(bearer=pair["access_token"]), pair["refresh_token"],
                self.clock() + float(pair["expires_in"]))

    async def sign_out(self, request: ApiRequest) -> ApiResponse:
        """The session ends (a person's tokens are revoked) and the browser forgets the cookie."""
        await self._end(request)
        return ApiResponse(204, {"set-cookie": expired_cookie(secure=self._secure(request)),
                                 "cache-control": "no-store"})

    async def _end(self, request: ApiRequest) -> None:
        """End the session whose cookie ``request`` carries, revoking a person's tokens."""
        token = cookie_token(request.header("cookie"))
        session = self.store.drop(token) if token else None
        if session is not None and session.refresh_token is not None:
            await self._revoke_tokens(session.credentials, session.refresh_token, request)

    def _secure(self, request: ApiRequest) -> bool:
        return request.secure or self.secure_cookie

    async def _revoke_tokens(self, credentials: Credentials, refresh_token: str, request: ApiRequest) -> None:
        for token in (credentials.bearer, refresh_token):
            if token:
                with contextlib.suppress(HubError):  # one already revoked or expired is as good
                    await self.auth.revoke(token, ip=request.remote, user_agent=request.header("user-agent"))
