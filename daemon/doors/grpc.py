"""The gRPC door (grpc.aio): the Hub service of proto/mcp_v2.proto over the one pipeline.

``Call`` (unary), ``CallStream`` (progress parts, then the final part) and
``ListCapabilities``.  Credentials come from metadata (``authorization: Bearer …`` or
``x-api-key``).  A HubError ends the RPC with its class's ``grpc_status`` and the
contract's error body as an ``ErrorBody`` message in the trailer ``democratic-ai-error-bin``.
The caller's deadline becomes the envelope's TTL (the sooner of it and the message's
``ttl``); a call the client cancels is cancelled in the pipeline (grpc.aio cancels the
handler task), so its queued work never runs.  The standard health service follows
``/ready``; server reflection is on, v1 and v1alpha (reflection.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from daemon.api.http_api import HttpApi
from daemon.core.envelope import (
    CallRequest,
    CallResult,
    CapabilityEntry,
    Credentials,
    MessageType,
    ProgressPart,
    new_trace_id,
)
from daemon.core.errors import HubError, PayloadTooLarge, ValidationError
from daemon.core.i18n import DEFAULT_LANGUAGE, pick_language, t
from daemon.core.pipeline import Pipeline
from daemon.doors._compat import AsyncHealthServicer
from daemon.doors.grpc_values import decode_payload, fill_value
from daemon.doors.reflection import enable_reflection
from daemon.runtime.config import GrpcConfig, parse_listen
from daemon.runtime.tls import TlsPair
from proto import mcp_v2_pb2 as pb

#: how much sooner than the caller's deadline the hub ends a call: 10 % of it, within 20-250 ms
DEADLINE_MARGIN_SHARE, DEADLINE_MARGIN_MIN_S, DEADLINE_MARGIN_MAX_S = 0.1, 0.02, 0.25

log = logging.getLogger("democratic_ai.grpc")

SERVICE = "democratic_ai.v2.Hub"
ERROR_TRAILER = "democratic-ai-error-bin"
#: how often the health service re-reads readiness (Check always reads it fresh)
HEALTH_REFRESH_S = 1.0

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Undecodable:
    """What the request deserializer yields for bytes that are not the message (answered INVALID_ARGUMENT)."""

    __slots__ = ("error", "full_name")

    def __init__(self, full_name: str, error: str) -> None:
        self.full_name = full_name
        self.error = error


def _lenient(message_type: type[Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError) as exc:
            return _Undecodable(message_type.DESCRIPTOR.full_name, str(exc))

    return parse


def _error_body(exc: HubError, trace_id: str, lang: str) -> pb.ErrorBody:
    details = struct_pb2.Struct()
    with contextlib.suppress(TypeError, ValueError, json_format.ParseError):
        json_format.ParseDict(exc.details, details)
    return pb.ErrorBody(code=exc.code, message=exc.render(lang), details=details, trace_id=trace_id)


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: HubError, trace_id: str,
                lang: str = "en") -> NoReturn:
    """End the RPC with the error's gRPC status and its contract body (in ``lang``) in the trailers."""
    trailers: Sequence[tuple[str, str | bytes]] = (
        (ERROR_TRAILER, _error_body(exc, trace_id, lang).SerializeToString()),
        ("x-trace-id", trace_id),
    )
    await context.abort(grpc.StatusCode[exc.grpc_status], exc.render(lang), trailing_metadata=trailers)
    raise AssertionError("context.abort returned")  # pragma: no cover


def call_response(result: CallResult) -> pb.CallResponse:
    """A CallResult as the proto's CallResponse; ``receipt`` is left unset when the result has none.

    Filled in place: a sub-message passed to the constructor is copied, which is most of the
    cost of a reply this small.
    """
    response = pb.CallResponse(id=result.id, correlation_id=result.correlation_id, module=result.module,
                               served_by=result.served_by)
    fill_value(response.result, result.result_json, result.result)
    if result.receipt is not None:
        receipt = response.receipt
        receipt.SetInParent()  # present even when every field holds its default
        receipt.seq = result.receipt.seq
        receipt.hash = result.receipt.hash
        peer = result.receipt.peer
        if peer:
            receipt.peer.SetInParent()
            receipt.peer.node, receipt.peer.seq, receipt.peer.hash = peer.node, peer.seq, peer.hash
    return response


def progress_part(part: ProgressPart) -> pb.StreamPart:
    """A progress part as a StreamPart with ``progress`` set; ``data`` only when the module sent some."""
    data = json_format.ParseDict(part.data, struct_pb2.Value()) if part.data is not None else None
    return pb.StreamPart(progress=pb.Progress(progress=part.progress, message=part.message, data=data))


class _Caller:
    """What a door reads off one RPC: credentials, peer, user agent, trace id, language (metadata ``lang``)."""

    __slots__ = ("credentials", "ip", "lang", "trace_id", "user_agent")

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        api_key = authorization = None
        trace_id = user_agent = lang = ""
        for key, value in context.invocation_metadata() or ():
            if not isinstance(value, str):
                continue
            if key == "x-api-key":
                api_key = value
            elif key == "authorization":
                authorization = value
            elif key == "x-trace-id" and len(value) <= 64 and value.isprintable():
                trace_id = value
            elif key == "user-agent":
                user_agent = value
            elif key in ("lang", "accept-language"):
                lang = lang or value  # errors are rendered in it (ja, zh; English otherwise)
        self.lang = pick_language(lang) if lang else DEFAULT_LANGUAGE  # most callers send none: skip the parse
        self.credentials = Credentials.from_headers(api_key, authorization)
        self.trace_id = trace_id or new_trace_id()
        self.user_agent = user_agent
        peer = context.peer() or ""
        # "ipv4:127.0.0.1:5555" / "ipv6:[::1]:5555"
        self.ip = peer.partition(":")[2].rpartition(":")[0].strip("[]")


class HubServicer:
    """The Hub service: decode -> pipeline -> encode."""

    def __init__(self, pipeline: Pipeline, max_body_bytes: int) -> None:
        self.pipeline = pipeline
        self.max_body_bytes = max_body_bytes

    def _request(self, message: pb.MCPMessage | _Undecodable, context: grpc.aio.ServicerContext[Any, Any],
                 caller: _Caller) -> CallRequest:
        if isinstance(message, _Undecodable):
            raise ValidationError(t("errors.doors_grpc.request_not_valid", full_name=message.full_name,
                                    exc=message.error))
        size = message.ByteSize()
        if size > self.max_body_bytes:
            raise PayloadTooLarge(t("errors.doors_grpc.message_over_bytes", max_body_bytes=self.max_body_bytes),
                                  {"limit": self.max_body_bytes})
        ttl: float | None = float(message.ttl) if message.ttl > 0 else None
        if message.ttl < 0:
            raise ValidationError(t("errors.http_api.ttl_positive_number_seconds"), {"pointer": "/ttl"})
        remaining = context.time_remaining()
        if remaining is not None:
            # the caller's deadline is the envelope's TTL (when it is the sooner), less a margin: the
            # hub ends the call first, so the caller gets DEADLINE_EXCEEDED with the error body
            # trailer instead of its own local timeout, and the hub records what really happened
            remaining -= min(DEADLINE_MARGIN_MAX_S, max(DEADLINE_MARGIN_MIN_S, remaining * DEADLINE_MARGIN_SHARE))
            ttl = max(remaining, 1e-3) if ttl is None else min(ttl, max(remaining, 1e-3))
        kind = MessageType.EVENT if message.type == pb.EVENT else MessageType.REQUEST
        if message.type not in (pb.MESSAGE_TYPE_UNSPECIFIED, pb.REQUEST, pb.EVENT):
            raise ValidationError(t("errors.doors_grpc.type_request_event"), {"pointer": "/type"})
        return CallRequest(
            action=message.action,
            payload=decode_payload(message),
            target=message.target_module_id,
            type=kind,
            priority=message.priority if message.HasField("priority") else 5,
            ttl=ttl,
            correlation_id=message.correlation_id,
            headers=dict(message.headers) if message.headers else {},  # a map's copy costs, even empty
            door="grpc",
            trace_id=caller.trace_id,
            bytes_in=size,
        )

    async def Call(self, message: pb.MCPMessage | _Undecodable,
                   context: grpc.aio.ServicerContext[Any, Any]) -> pb.CallResponse:
        """The final CallResponse (a streaming capability is drained); a HubError aborts with its grpc_status."""
        caller = _Caller(context)
        try:
            request = self._request(message, context, caller)
            result = await self.pipeline.call(request, caller.credentials, ip=caller.ip,
                                              user_agent=caller.user_agent)
            return call_response(result)
        except HubError as exc:
            await abort(context, exc, caller.trace_id, caller.lang)

    async def CallStream(self, message: pb.MCPMessage | _Undecodable,
                         context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[pb.StreamPart]:
        """StreamParts with ``progress``, then one with ``final``; a HubError, even mid-stream, aborts the RPC."""
        caller = _Caller(context)
        try:
            request = self._request(message, context, caller)
            parts = self.pipeline.stream(request, caller.credentials, ip=caller.ip, user_agent=caller.user_agent)
            try:
                async for part in parts:
                    if isinstance(part, CallResult):
                        yield pb.StreamPart(final=call_response(part))
                    else:
                        yield progress_part(part)
            finally:
                await parts.aclose()  # type: ignore[attr-defined]
        except HubError as exc:
            await abort(context, exc, caller.trace_id, caller.lang)

    async def ListCapabilities(self, message: pb.ListCapabilitiesRequest | _Undecodable,
                               context: grpc.aio.ServicerContext[Any, Any]) -> pb.ListCapabilitiesResponse:
        """Every action this hub serves (module:read); UNAUTHENTICATED / PERMISSION_DENIED abort the RPC."""
        caller = _Caller(context)
        try:
            if isinstance(message, _Undecodable):
                raise ValidationError(t("errors.doors_grpc.request_not_valid", full_name=message.full_name,
                                    exc=message.error))
            principal = await self.pipeline.authenticate(caller.credentials, ip=caller.ip,
                                                         user_agent=caller.user_agent)
            capabilities = await self.pipeline.capabilities(principal)
        except HubError as exc:
            await abort(context, exc, caller.trace_id, caller.lang)
        return pb.ListCapabilitiesResponse(capabilities=[_capability(c) for c in capabilities])

    def handler(self) -> grpc.GenericRpcHandler:
        """The three methods under ``SERVICE``; undecodable requests reach them (answered INVALID_ARGUMENT)."""
        call = _lenient(pb.MCPMessage)
        serialize = pb.CallResponse.SerializeToString
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Call": grpc.unary_unary_rpc_method_handler(
                self.Call, request_deserializer=call, response_serializer=serialize),
            "CallStream": grpc.unary_stream_rpc_method_handler(
                self.CallStream, request_deserializer=call, response_serializer=pb.StreamPart.SerializeToString),
            "ListCapabilities": grpc.unary_unary_rpc_method_handler(
                self.ListCapabilities, request_deserializer=_lenient(pb.ListCapabilitiesRequest),
                response_serializer=pb.ListCapabilitiesResponse.SerializeToString),
        })


def _capability(entry: CapabilityEntry) -> pb.CapabilityInfo:
    def struct(schema: Any) -> struct_pb2.Struct:
        out = struct_pb2.Struct()
        if isinstance(schema, dict):
            json_format.ParseDict(schema, out)
        return out

    return pb.CapabilityInfo(
        action=entry.action, description=entry.description,
        input_schema=struct(entry.input_schema), output_schema=struct(entry.output_schema),
        streaming=entry.streaming, modules=[m.id for m in entry.modules], origin=entry.origin,
    )


class ReadinessHealth(AsyncHealthServicer):
    """grpc.health.v1 whose status follows /ready ("" and the Hub service)."""

    def __init__(self, readiness: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self._readiness = readiness

    async def refresh(self) -> None:
        """Read readiness now and publish SERVING / NOT_SERVING for "" and the Hub service when it changed."""
        status = _SERVING if self._readiness().get("ready") else _NOT_SERVING
        for service in ("", SERVICE):
            if self._server_status.get(service) != status:
                await self.set(service, status)

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext[Any, Any]) -> health_pb2.HealthCheckResponse:
        """The standard Check, answered from readiness read fresh (Watch follows the 1 s refresh)."""
        await self.refresh()
        return await super().Check(request, context)  # type: ignore[no-any-return]


class GrpcDoor:
    """The grpc.aio server: the Hub service, health and reflection; ``port`` once started."""

    def __init__(self, config: GrpcConfig, api: HttpApi, *, max_body_bytes: int, grace_s: float = 10.0,
                 tls: TlsPair | None = None) -> None:
        self.config = config
        #: served over TLS with this pair when set (the hub decides: beyond loopback, or asked for)
        self.tls = tls
        self.pipeline = api.pipeline
        self.health = ReadinessHealth(api.readiness)
        self.servicer = HubServicer(api.pipeline, max_body_bytes)
        self.max_body_bytes = max_body_bytes
        self.grace_s = grace_s
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind ``config.listen`` (TLS when ``tls`` is set) and serve; OSError when the port cannot be taken."""
        host, port = parse_listen(self.config.listen)
        limit = self.max_body_bytes + 64 * 1024  # our own check answers PAYLOAD_TOO_LARGE with a body
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ])
        server.add_generic_rpc_handlers((self.servicer.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        enable_reflection(server, (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self.tls is None:
                self.port = server.add_insecure_port(bind)
            else:
                pair = self.tls
                credentials = grpc.ssl_server_credentials([(pair.private_key.read_bytes(),
                                                            pair.certificate.read_bytes())])
                self.port = server.add_secure_port(bind, credentials)
        except RuntimeError as exc:  # grpc reports a taken port this way, not as OSError
            raise OSError(f"the gRPC door cannot listen on {self.config.listen}: {exc}") from None
        if not self.port:
            raise OSError(f"the gRPC door cannot listen on {self.config.listen}")
        await server.start()
        self._server = server
        await self.health.refresh()
        self._hold(self._follow_readiness())
        log.info("grpc door listening", extra={"listen": f"{host}:{self.port}", "tls": self.tls is not None})

    def _hold(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow_readiness(self) -> None:
        while True:
            await self.health.refresh()
            await asyncio.sleep(HEALTH_REFRESH_S)

    async def stop_accepting(self) -> None:
        """Health says NOT_SERVING; new RPCs are refused; those running get the grace period."""
        for task in list(self._tasks):
            task.cancel()
        await self.health.enter_graceful_shutdown()
        if self._server is not None and self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._server.stop(self.grace_s))

    async def close(self) -> None:
        """Stop the server now, cutting short any grace ``stop_accepting`` gave; safe to call twice."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.stop(0)
            if self._stopping is not None:
                await self._stopping
            self._server = None
