"""The hub's HTTP API, independent of transport.

The HTTP/1.1 door (aiohttp) and the HTTP/3 door (aioquic) both turn a request into an
``ApiRequest`` and write back the ``ApiResponse`` this returns, so the two serve the
same routes with the same bodies and codes.  Route handlers only decode, call the
pipeline (or the admin and usage APIs) and encode: no business logic lives here.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.core.decoding import OFFLOAD_BYTES, decode_json, decode_json_async
from daemon.core.envelope import (
    CallRequest,
    CallResult,
    Credentials,
    MessageType,
    Principal,
    ProgressPart,
    new_trace_id,
    trace_id_var,
)
from daemon.core.errors import (
    HubError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    ValidationError,
)
from daemon.core.i18n import DEFAULT_LANGUAGE, language_var, pick_language, t
from daemon.core.pipeline import Pipeline, encode_json
from daemon.runtime.metrics import HubMetrics
from daemon.tenancy.rbac import is_cross_tenant

log = logging.getLogger("democratic_ai.http")

JSON = "application/json"
BILLING_READ = "billing:read"
NDJSON = "application/x-ndjson"


class ByteStream(Protocol):
    """A streamed body: async-iterable bytes that a door closes when it is done (or gone)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None:
        """Stop producing and release what the stream holds; called once the door is done or the peer gone."""
        ...


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP request as either door decoded it; ``headers`` have lower-case names."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)
    remote: str = ""
    door: str = "http"
    #: True when the request came over TLS (every HTTP/3 request; HTTP/1.1 when the door serves TLS)
    secure: bool = False

    def header(self, name: str, default: str = "") -> str:
        """A header by its lower-case name; ``default`` when absent."""
        return self.headers.get(name, default)

    @property
    def credentials(self) -> Credentials:
        """``X-API-Key`` and ``Authorization: Bearer``, unchecked."""
        return Credentials.from_headers(self.header("x-api-key"), self.header("authorization"))

    @property
    def language(self) -> str:
        """The language errors are answered in: the best of en/ja/zh for ``Accept-Language``."""
        header = self.header("accept-language")
        return _language_of(header) if header else DEFAULT_LANGUAGE

    @property
    def trace_id(self) -> str:
        """The caller's ``X-Trace-Id`` when printable and <= 64 chars, else a fresh one (new on every read)."""
        supplied = self.header("x-trace-id")
        return supplied if supplied and len(supplied) <= 64 and supplied.isprintable() else new_trace_id()

    def json(self) -> Any:
        """The body through the hub's one JSON decoder; None when empty; VALIDATION_ERROR names the bad part."""
        return decode_json(self.body) if self.body else None

    async def json_async(self) -> Any:
        """``json``, decoded off the event loop when the body is large (``daemon.core.decoding.OFFLOAD_BYTES``)."""
        return await decode_json_async(self.body) if self.body else None


@dataclass(slots=True)
class ApiResponse:
    """What a door writes back: ``body`` at once, or ``stream`` chunk by chunk when it is set."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: ByteStream | None = None

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> ApiResponse:
        """``value`` encoded compactly with content-type application/json (``headers`` may override it)."""
        return cls(status, {"content-type": JSON, **(headers or {})}, encode(value))


#: a caller sends the same Accept-Language on every request: parsed once per distinct value (bounded)
_language_of = functools.lru_cache(maxsize=256)(pick_language)


def encode(value: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII kept), as every route answers."""
    return encode_json(value)


def error_response(exc: HubError, trace_id: str, lang: str | None = None) -> ApiResponse:
    """The contract's error body at the class's HTTP status, with Retry-After/RateLimit-* or Allow when they apply.

    The message is in ``lang``; by default the language of the request being handled (``language_var``).
    """
    headers = {"x-trace-id": trace_id}
    if isinstance(exc, RateLimited):
        headers["retry-after"] = str(max(1, int(exc.retry_after + 0.999)))
        headers.update({k.lower(): v for k, v in exc.headers.items()})
    elif isinstance(exc, Unavailable) and exc.retry_after is not None:
        headers["retry-after"] = str(max(1, int(exc.retry_after + 0.999)))
    if isinstance(exc, MethodNotAllowed) and "allow" in exc.details:
        headers["allow"] = ", ".join(exc.details["allow"])
    return ApiResponse.json(exc.to_body(trace_id, lang), exc.http_status, headers)


def result_body(result: CallResult) -> bytes:
    """The /v1/call answer, with the already-encoded result spliced in (no second encode)."""
    if result.receipt is None:
        receipt = b"null"
    elif result.receipt.peer is None:
        receipt = b'{"seq":%d,"hash":"%s"}' % (result.receipt.seq, result.receipt.hash.encode())
    else:
        receipt = json.dumps(result.receipt.to_dict(), separators=(",", ":")).encode()
    return b"".join((
        b'{"id":', _text(result.id), b',"correlation_id":', _text(result.correlation_id),
        b',"module":', _text(result.module), b',"result":', result.result_json,
        b',"receipt":', receipt,
        b',"served_by":' + _text(result.served_by) if result.served_by else b"", b"}",
    ))


_PLAIN = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.:")


def _text(value: str) -> bytes:
    """A JSON string; ids and module names are plain, so most need no escaping pass."""
    if _PLAIN.issuperset(value):
        return b'"' + value.encode() + b'"'
    return encode(value)


def parse_call(body: Any, door: str, trace_id: str, bytes_in: int) -> CallRequest:
    """A /v1/call body (also a WebSocket call frame) -> CallRequest, naming the bad field."""
    if not isinstance(body, dict):
        raise ValidationError(t("errors.http_api.body_json_object"), {"pointer": ""})
    action = body.get("action")
    if not isinstance(action, str) or not action:
        raise ValidationError(t("errors.http_api.action_required_non_empty"), {"pointer": "/action"})
    target = body.get("target", "")
    if not isinstance(target, str):
        raise ValidationError(t("errors.http_api.target_string"), {"pointer": "/target"})
    priority = body.get("priority", 5)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ValidationError(t("errors.http_api.priority_integer"), {"pointer": "/priority"})
    ttl = body.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise ValidationError(t("errors.http_api.ttl_positive_number_seconds"), {"pointer": "/ttl"})
    kind = body.get("type", "request")
    message_type = _KINDS.get(kind) if isinstance(kind, str) else None  # a dict or list is no dict key
    if message_type is None:
        raise ValidationError(t("errors.http_api.type_request_event"), {"pointer": "/type"})
    correlation_id = body.get("correlation_id", "")
    if not isinstance(correlation_id, str):
        raise ValidationError(t("errors.http_api.correlation_id_string"), {"pointer": "/correlation_id"})
    headers = body.get("headers", {})
    if not isinstance(headers, dict) or (headers and not all(isinstance(v, str) for v in headers.values())):
        raise ValidationError(t("errors.http_api.headers_object_strings"), {"pointer": "/headers"})
    # positional, in CallRequest's field order: a keyword call costs a µs more per call
    return CallRequest(action, body.get("payload", {}), target, message_type, priority,
                       float(ttl) if ttl is not None else None, correlation_id, headers, door, trace_id, bytes_in)


#: the envelope types a call body may ask for, by their wire spelling
_KINDS = {"request": MessageType.REQUEST, "event": MessageType.EVENT}


def part_line(part: ProgressPart | CallResult) -> bytes:
    """One NDJSON line: a progress part, or the final result as ``{"type": "result", "is_complete": true, ...}``."""
    if isinstance(part, ProgressPart):
        return encode(part.to_dict()) + b"\n"
    return b'{"type":"result","is_complete":true,' + result_body(part)[1:] + b"\n"


class PartLines:
    """NDJSON lines of a streamed call; ``aclose`` ends the pipeline's stream even if never read."""

    def __init__(self, first: ProgressPart | CallResult, parts: AsyncGenerator[ProgressPart | CallResult, None],
                 trace_id: str) -> None:
        self._pending: ProgressPart | CallResult | None = first
        self._parts = parts
        self._trace_id = trace_id
        self._done = False

    def __aiter__(self) -> PartLines:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        if self._pending is not None:
            part, self._pending = self._pending, None
            return part_line(part)
        try:
            return part_line(await anext(self._parts))
        except StopAsyncIteration:
            self._done = True
            raise
        except HubError as exc:
            self._done = True
            return encode({"type": "error", **exc.to_body(self._trace_id)}) + b"\n"

    async def aclose(self) -> None:
        """End the lines and close the pipeline's stream (which ends the call there if it is still running)."""
        self._done = True
        await self._parts.aclose()


class AdminApi(Protocol):
    """Tenancy administration (daemon/api/admin.py)."""


class UsageReports(Protocol):
    """The billing side of /v1/usage (``metering/billing.py``)."""

    async def usage_report(self, principal: Principal, period: str | None) -> dict[str, Any]:
        """The caller's tenant's invoice for ``period`` (YYYY-MM or YYYY; None: this month) and its balance."""
        ...


Handler = Callable[[ApiRequest, re.Match[str]], Awaitable[ApiResponse]]


class SessionAuth(Protocol):
    """Browser sessions (the console's cookie, daemon/console/routes.py): the one place they become credentials."""

    async def apply(self, request: ApiRequest) -> ApiRequest:
        """``request`` carrying its session's credential when it came with a session cookie and no other
        (``HttpApi`` asks only for a request with a ``cookie`` header: without one there is no session);
        PERMISSION_DENIED (reason csrf) when a cookie request that changes something lacks the CSRF header."""
        ...

    async def rejected(self, request: ApiRequest) -> None:
        """Something in ``request`` was UNAUTHENTICATED: end its session if the session's own credential is."""
        ...


@dataclass(frozen=True, slots=True)
class Route:
    """A path pattern and its handlers by upper-case method."""

    pattern: re.Pattern[str]
    methods: dict[str, Handler]


class HttpApi:
    """The route table both HTTP doors serve; admin and MCP routes are mounted on it with ``add``."""

    def __init__(self, pipeline: Pipeline, metrics: HubMetrics, *, readiness: Callable[[], dict[str, Any]],
                 usage: UsageReports | None = None, metrics_token: str = "") -> None:
        self.pipeline = pipeline
        #: when set, /metrics answers only ``Authorization: Bearer <metrics_token>``
        self.metrics_token = metrics_token
        self.metrics = metrics
        self.readiness = readiness
        self.usage = usage
        #: the fleet's peers as operators see them; None on a hub with no fleet
        self.peers: Callable[[], list[dict[str, Any]]] | None = None
        #: the central billing node's receiver of sealed usage batches; None elsewhere
        self.sync_batch: Callable[[bytes], Awaitable[int]] | None = None
        #: cookie sessions (the console); None: only X-API-Key and Authorization authenticate
        self.session_auth: SessionAuth | None = None
        self._routes: list[Route] = []
        #: a path without parameters -> its route and the (constant) match handlers receive
        self._exact: dict[str, tuple[Route, re.Match[str]]] = {}
        self.add("/v1/call", POST=self.post_call)
        self.add("/v1/capabilities", GET=self.get_capabilities)
        self.add("/v1/usage", GET=self.get_usage)
        self.add("/v1/peers", GET=self.get_peers)
        self.add("/v1/sync/batch", POST=self.post_sync_batch)
        self.add("/health", GET=self.get_health)
        self.add("/ready", GET=self.get_ready)
        self.add("/metrics", GET=self.get_metrics)

    def add(self, path: str, **methods: Handler) -> None:
        """Mount handlers; ``{name}`` in the path matches one segment."""
        pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")
        route = Route(pattern, {m.upper(): h for m, h in methods.items()})
        if "{" in path:
            self._routes.append(route)
        else:
            match = pattern.match(path)
            assert match is not None
            self._exact[path] = (route, match)

    async def handle(self, request: ApiRequest) -> ApiResponse:
        """Always a response: HubErrors become their contract body, any other exception a logged INTERNAL (500)."""
        trace_id = request.trace_id
        token = trace_id_var.set(trace_id)
        lang_token = language_var.set(request.language)
        try:
            if self.session_auth is not None and "cookie" in request.headers:
                request = await self.session_auth.apply(request)  # a browser's: API clients send no cookie
            route, match = self._find(request.path)
            handler = route.methods.get(request.method)
            if handler is None and request.method == "HEAD":
                handler = route.methods.get("GET")
            if handler is None:
                raise MethodNotAllowed(t("errors.http_api.not_allowed", method=request.method, path=request.path),
                                       {"allow": sorted(route.methods)})
            response = await handler(request, match)
            response.headers.setdefault("x-trace-id", trace_id)
            return response
        except HubError as exc:
            if isinstance(exc, Unauthenticated) and self.session_auth is not None:
                await self.session_auth.rejected(request)
            return error_response(exc, trace_id)
        except Exception:
            log.exception("unhandled error", extra={"path": request.path})
            return error_response(InternalError(t("errors.http_api.hub_failed_handle_request")), trace_id)
        finally:
            language_var.reset(lang_token)
            trace_id_var.reset(token)

    def _find(self, path: str) -> tuple[Route, re.Match[str]]:
        exact = self._exact.get(path)
        if exact is not None:
            return exact
        for route in self._routes:
            match = route.pattern.match(path)
            if match:
                return route, match
        raise NotFound(t("errors.http_api.no_route", path=path), {"path": path})

    # -- routes ---------------------------------------------------------------------
    async def post_call(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """/v1/call: the result as JSON, or NDJSON lines when ``Accept`` asks for application/x-ndjson."""
        trace_id = trace_id_var.get()
        body = request.body
        # a small body is decoded here, a large one off the loop (as ``json_async`` does: one coroutine less)
        value = (decode_json(body) if len(body) <= OFFLOAD_BYTES else await decode_json_async(body)) if body else None
        call = parse_call(value, request.door, trace_id, len(body))
        ua = request.header("user-agent")
        if NDJSON in request.header("accept"):
            return await self._stream_call(call, request, ua)
        result = await self.pipeline.call(call, request.credentials, ip=request.remote, user_agent=ua)
        return ApiResponse(200, {"content-type": JSON, **result.headers}, result_body(result))

    async def _stream_call(self, call: CallRequest, request: ApiRequest, ua: str) -> ApiResponse:
        parts = self.pipeline.stream(call, request.credentials, ip=request.remote, user_agent=ua)
        # errors before the first part are real HTTP errors; after it they are a final error line
        try:
            first = await anext(parts)
        except BaseException:
            await parts.aclose()
            raise
        headers = first.headers if isinstance(first, CallResult) else {}
        return ApiResponse(200, {"content-type": NDJSON, **headers}, stream=PartLines(first, parts, call.trace_id))

    async def get_capabilities(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """/v1/capabilities (module:read): the served actions and the modules that failed to start."""
        principal = await self.pipeline.authenticate(request.credentials, ip=request.remote,
                                                     user_agent=request.header("user-agent"))
        capabilities = await self.pipeline.capabilities(principal)
        # why a module failed (paths, library errors) is the operator's business: names only for tenants
        operator = is_cross_tenant(principal.permissions)
        failed = [{"module": f.name, "error": f.error} if operator else {"module": f.name}
                  for f in self.pipeline.host.failed.values()]
        return ApiResponse.json({"capabilities": [c.to_dict() for c in capabilities], "failed_modules": failed})

    async def get_peers(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """/v1/peers (operators): the fleet's peers, their state, round trip, advert age and capabilities."""
        principal = await self.pipeline.authenticate(request.credentials, ip=request.remote,
                                                     user_agent=request.header("user-agent"))
        if not is_cross_tenant(principal.permissions):
            raise PermissionDenied(t("errors.http_api.fleet_peers_hub_operators"))
        return ApiResponse.json({"node_id": self.pipeline.node_id,
                                 "peers": self.peers() if self.peers is not None else []})

    async def post_sync_batch(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """/v1/sync/batch (central node): a site's sealed usage batch; ``{"acked": seq}`` once it is durable.

        No API key: the batch proves itself (the site's node key and its fleet certificate, checked
        by the receiver). NOT_FOUND on a hub that is not the central node.
        """
        if self.sync_batch is None:
            raise NotFound(t("errors.http_api.hub_not_central_billing"))
        return ApiResponse.json({"acked": await self.sync_batch(request.body)})

    async def get_usage(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """/v1/usage?period= (billing:read): the tenant's usage report; NOT_FOUND when billing is off."""
        principal = await self.pipeline.authenticate(request.credentials, ip=request.remote,
                                                     user_agent=request.header("user-agent"))
        self.pipeline.auth.authorize(principal, BILLING_READ)
        if self.usage is None:
            raise NotFound(t("errors.http_api.usage_reporting_not_enabled"))
        return ApiResponse.json(await self.usage.usage_report(principal, request.query.get("period")))

    async def get_health(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """/health: liveness only, always 200 and needs no credentials."""
        return ApiResponse.json({"status": "ok"})

    async def get_ready(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """/ready: the readiness report, 200 when ``ready`` else 503."""
        state = self.readiness()
        return ApiResponse.json(state, 200 if state.get("ready") else 503)

    async def get_metrics(self, request: ApiRequest, _: re.Match[str]) -> ApiResponse:
        """/metrics: Prometheus text (a bearer token first when configured); module gauges sampled at scrape time."""
        if self.metrics_token:
            scheme, _sep, token = request.header("authorization").partition(" ")
            # compare_digest: a token must not be guessable a byte at a time from response times
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                     self.metrics_token.encode()):
                raise Unauthenticated(t("errors.http_api.metrics_needs_authorization_bearer"))
        self.metrics.set_module_stats(self.pipeline.host.stats())
        self.metrics.modules_failed.set(len(self.pipeline.host.failed))
        return ApiResponse(200, {"content-type": self.metrics.content_type}, self.metrics.render())
