"""``/v1/ws``: many calls and their streamed parts over one client WebSocket (aiohttp).

A socket is authenticated before it may call:

* at the upgrade, from ``X-API-Key`` / ``Authorization: Bearer`` — bad ones are refused
  there with the contract's JSON body (401), and no socket opens; or
* by its first frame, ``{"type": "auth", "api_key" | "token": ...}``, for clients that cannot
  set headers (browsers), within ``http.ws_auth_timeout_s``.  The frame is checked and answered
  ``{"type": "auth", "ok": true}`` or ``{"type": "auth", "ok": false, "error": {...}}``; a
  failure, a first frame that is anything else, or silence closes the socket with 1008
  (policy violation) and a reason saying what was missing.

A later auth frame switches the socket to new credentials (a refreshed JWT) once they check
out, and closes it like the first one when they do not.  Every call is still authenticated
by the pipeline, so a revoked key stops working on an open socket too.  At most
``http.ws_max_in_flight`` calls run at once per socket; a call frame past that is answered
RATE_LIMITED at once.  Frames go through the hub's one JSON decoder (``core/decoding.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from daemon.api.http_api import ApiResponse, error_response, parse_call
from daemon.core.decoding import decode_json_async
from daemon.core.envelope import CallResult, Credentials, ProgressPart, new_trace_id
from daemon.core.errors import HubError, InternalError, RateLimited, Unauthenticated, ValidationError
from daemon.core.i18n import language_var, pick_language, t
from daemon.core.pipeline import Pipeline
from daemon.runtime.config import HttpConfig

log = logging.getLogger("democratic_ai.http")

Send = Callable[[dict[str, Any] | str], Awaitable[None]]
#: what a bad frame is called in its VALIDATION_ERROR (made once, not per frame)
_FRAME = t("errors.what.frame")
#: json.dumps(frame, separators=(",", ":")) without building an encoder per frame
_encode = json.JSONEncoder(separators=(",", ":")).encode


class _Refused(Exception):
    """The socket's authentication failed: the frame to send, then the close reason."""

    def __init__(self, frame: dict[str, Any], reason: str) -> None:
        super().__init__(reason)
        self.frame = frame
        self.reason = reason


class ClientSockets:
    """Serves ``/v1/ws``; ``sockets`` is the door's set of open sockets (closed with 1001 at shutdown)."""

    def __init__(self, config: HttpConfig, pipeline: Pipeline, sockets: set[web.WebSocketResponse]) -> None:
        self.config = config
        self.pipeline = pipeline
        self.sockets = sockets

    async def serve(self, request: web.Request, write: Callable[[ApiResponse], web.StreamResponse]
                    ) -> web.StreamResponse:
        """One client socket, from its upgrade to its close; ``write`` answers a refused upgrade."""
        # error frames speak the upgrade's Accept-Language for the socket's whole life
        token = language_var.set(pick_language(request.headers.get("Accept-Language")))
        try:
            return await self._serve(request, write)
        finally:
            language_var.reset(token)

    async def _serve(self, request: web.Request, write: Callable[[ApiResponse], web.StreamResponse]
                     ) -> web.StreamResponse:
        trace_id = _trace_id(_supplied_trace_id(request))
        ip, ua = request.remote or "", request.headers.get("User-Agent", "")
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=self.config.max_body_bytes)
        if not ws.can_prepare(request).ok:
            return write(error_response(ValidationError(
                t("errors.ws_clients.get_v1_ws_websocket")), trace_id))
        credentials = Credentials.from_headers(request.headers.get("X-API-Key"), request.headers.get("Authorization"))
        if credentials.present:
            try:
                await self.pipeline.authenticate(credentials, ip=ip, user_agent=ua)
            except HubError as exc:
                return write(error_response(exc, trace_id))
        await ws.prepare(request)
        self.sockets.add(ws)
        send_lock = asyncio.Lock()

        async def send(frame: dict[str, Any] | str) -> None:
            text = frame if isinstance(frame, str) else _encode(frame)  # a str: already encoded
            async with send_lock:
                if not ws.closed:
                    await ws.send_str(text)

        try:
            if not credentials.present:
                credentials = await self._first_frame(ws, send, ip, ua, trace_id)
            await self._calls(ws, send, credentials, request, ip, ua)
        except _Refused as refused:
            await _refuse(ws, send, refused)
        finally:
            self.sockets.discard(ws)
        return ws

    async def _first_frame(self, ws: web.WebSocketResponse, send: Send, ip: str, ua: str,
                           trace_id: str) -> Credentials:
        """The credentials of an auth first frame, answered ok; _Refused for anything else."""
        timeout = self.config.ws_auth_timeout_s
        try:
            message = await ws.receive(timeout=timeout)
        except TimeoutError:
            silent = Unauthenticated(t("errors.ws_clients.no_credentials_within_send", timeout=timeout))
            raise _Refused(_frame_error(None, silent, trace_id),
                           f"authenticate within {timeout:g} s") from None
        if message.type is not WSMsgType.TEXT:
            if message.type is WSMsgType.BINARY:
                raise _Refused(_frame_error(None, ValidationError(t("errors.ws_clients.frames_json_text")), trace_id),
                               "frames must be JSON text")
            return Credentials()  # the socket is closing: nothing will be read
        try:
            frame = await decode_json_async(message.data, what=_FRAME)
        except ValidationError as exc:
            raise _Refused(_frame_error(None, exc, trace_id), "the first frame is not valid JSON") from None
        if not (isinstance(frame, dict) and frame.get("type") == "auth"):
            call_id = frame.get("id") if isinstance(frame, dict) else None
            missing = Unauthenticated(t("errors.ws_clients.socket_no_credentials_first"))
            raise _Refused(_frame_error(call_id, missing, trace_id), "authenticate first")
        return await self._auth(frame, send, ip, ua, trace_id)

    async def _auth(self, frame: dict[str, Any], send: Send, ip: str, ua: str, trace_id: str) -> Credentials:
        """Check an auth frame's credentials and answer it; _Refused when they do not hold."""
        api_key, token = frame.get("api_key"), frame.get("token")
        if not isinstance(api_key, str | None) or not isinstance(token, str | None):
            pointer = "/api_key" if not isinstance(api_key, str | None) else "/token"
            exc: HubError = ValidationError(t("errors.ws_clients.api_key_token_strings"), {"pointer": pointer})
            raise _Refused({"type": "auth", "ok": False, **exc.to_body(trace_id)}, "bad auth frame")
        credentials = Credentials(api_key=api_key or None, bearer=token or None)
        try:
            principal = await self.pipeline.authenticate(credentials, ip=ip, user_agent=ua)
        except HubError as exc:
            raise _Refused({"type": "auth", "ok": False, **exc.to_body(trace_id)},
                           f"authentication failed: {exc.code}") from None
        await send({"type": "auth", "ok": True, "tenant": principal.tenant_name, "role": principal.role})
        return credentials

    async def _calls(self, ws: web.WebSocketResponse, send: Send, credentials: Credentials, request: web.Request,
                     ip: str, ua: str) -> None:
        limit = self.config.ws_max_in_flight
        supplied = _supplied_trace_id(request)  # the upgrade's headers do not change: read them once
        in_flight: set[asyncio.Task[None]] = set()
        async with asyncio.TaskGroup() as calls:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    if message.type is WSMsgType.BINARY:
                        await send(_frame_error(None, ValidationError(t("errors.ws_clients.frames_json_text")), ""))
                    continue
                trace_id = _trace_id(supplied)
                try:
                    frame = await decode_json_async(message.data, what=_FRAME)
                except ValidationError as exc:
                    await send(_frame_error(None, exc, trace_id))
                    continue
                if isinstance(frame, dict) and frame.get("type") == "auth":
                    try:
                        credentials = await self._auth(frame, send, ip, ua, trace_id)
                    except _Refused as refused:
                        await _refuse(ws, send, refused)
                        break
                    continue
                if len(in_flight) >= limit:
                    call_id = frame.get("id") if isinstance(frame, dict) else None
                    busy = RateLimited(t("errors.ws_clients.socket_calls_flight_most", limit=limit), 1.0,
                                       details={"limit": limit})
                    await send(_frame_error(call_id, busy, trace_id))
                    continue
                task = calls.create_task(self._call(frame, credentials, send, trace_id, ip, ua,
                                                    len(message.data)))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            # the socket is gone: its calls end in the pipeline too (queued work never runs for nobody)
            for task in in_flight:
                task.cancel()

    async def _call(self, frame: Any, credentials: Credentials, send: Send, trace_id: str, ip: str, ua: str,
                    size: int) -> None:
        call_id = frame.get("id") if isinstance(frame, dict) else None
        try:
            call = parse_call(frame, "ws", trace_id, size)
            if frame.get("stream"):
                async for part in self.pipeline.stream(call, credentials, ip=ip, user_agent=ua):
                    await send(_part_frame(part, call_id))
            else:
                await send(_part_frame(await self.pipeline.call(call, credentials, ip=ip, user_agent=ua), call_id))
        except HubError as exc:
            await send(_frame_error(call_id, exc, trace_id))
        except Exception:  # a bug answers this call INTERNAL; it must not end the socket's other calls
            log.exception("unhandled error in a WebSocket call")
            await send(_frame_error(call_id, InternalError(t("errors.ws_clients.hub_failed_handle_call")), trace_id))


async def _refuse(ws: web.WebSocketResponse, send: Send, refused: _Refused) -> None:
    await send(refused.frame)
    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=refused.reason.encode()[:120])  # fits 123 bytes


def _supplied_trace_id(request: web.Request) -> str:
    """The upgrade's X-Trace-Id when acceptable (ApiRequest's rule), else ""."""
    supplied = request.headers.get("X-Trace-Id", "")
    return supplied if supplied and len(supplied) <= 64 and supplied.isprintable() else ""


def _trace_id(supplied: str) -> str:
    """A frame's trace id: the upgrade's X-Trace-Id when it had one, else a fresh one per frame."""
    return supplied or new_trace_id()


def _part_frame(part: ProgressPart | CallResult, call_id: Any) -> dict[str, Any] | str:
    # "id" is the client's call id; the hub's message id travels as "message_id"
    if isinstance(part, CallResult):
        if part.result_json.isascii():
            return _result_text(part, call_id)
        frame = {"type": "result", **part.to_dict()}
    else:
        frame = part.to_dict()
    return {**frame, "id": call_id, "message_id": part.id}


def _result_text(result: CallResult, call_id: Any) -> str:
    """The result frame as ``_encode`` would write it, with the pipeline's encoded result spliced in.

    Only for an ASCII ``result_json``: it is encoded without escaping non-ASCII, the frame with
    escaping, and the spliced text must be the very same bytes the dict path gives.
    """
    receipt = result.receipt
    served_by = f',"served_by":{_encode(result.served_by)}' if result.served_by else ""
    return (f'{{"type":"result","id":{_encode(call_id)},"correlation_id":{_encode(result.correlation_id)},'
            f'"module":{_encode(result.module)},"result":{result.result_json.decode("ascii")},'
            f'"receipt":{_encode(receipt.to_dict()) if receipt is not None else "null"}{served_by},'
            f'"message_id":{_encode(result.id)}}}')


def _frame_error(call_id: Any, exc: HubError, trace_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "error", **exc.to_body(trace_id)}

