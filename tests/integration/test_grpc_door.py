"""A gRPC client's view: the Hub service, errors in the trailers, deadlines, health and reflection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_tools import protoc

from daemon.cli.clients.grpc import grpc_error_body
from proto import mcp_v2_pb2 as pb
from proto import mcp_v2_pb2_grpc as pb_grpc
from tests.support.doorclients import Hub, mcp_message, metric
from tests.support.hubproc import ROOT, HubProcess


@pytest.fixture(scope="module")
def doors(hub: HubProcess) -> Hub:
    return Hub(hub.endpoints, hub.state_dir)


def channel(doors: Hub) -> grpc.aio.Channel:
    host, port = doors.hostport("grpc")
    return grpc.aio.insecure_channel(f"{host}:{port}")


async def test_capabilities_are_listed_with_their_schemas(doors: Hub, hub: HubProcess) -> None:
    async with channel(doors) as ch:
        reply = await pb_grpc.HubStub(ch).ListCapabilities(
            pb.ListCapabilitiesRequest(), metadata=(("x-api-key", hub.admin_key),), timeout=30)
    by_action = {c.action: c for c in reply.capabilities}
    assert by_action["echo.stream"].streaming and by_action["echo.stream"].modules == ["echo"]
    assert by_action["echo.stream"].input_schema["properties"]["steps"]["type"] == "integer"


async def test_an_error_carries_the_contract_body_in_the_trailers(doors: Hub, hub: HubProcess) -> None:
    async with channel(doors) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await pb_grpc.HubStub(ch).Call(mcp_message("no.such.capability", {}),
                                           metadata=(("x-api-key", hub.admin_key), ("x-trace-id", "t-123")),
                                           timeout=30)
    assert failed.value.code() is grpc.StatusCode.NOT_FOUND
    trailers = dict(failed.value.trailing_metadata() or ())
    body = pb.ErrorBody.FromString(trailers["democratic-ai-error-bin"])
    assert (body.code, body.trace_id, body.details["action"]) == ("CAPABILITY_NOT_FOUND", "t-123", "no.such.capability")


async def test_the_callers_deadline_becomes_the_calls_ttl(doors: Hub, hub: HubProcess) -> None:
    def ended_by_deadline() -> Awaitable[float]:
        return metric(doors, "democratic_ai_requests", door="grpc", action="echo.stream", code="DEADLINE_EXCEEDED")

    before = await ended_by_deadline()
    slow = mcp_message("echo.stream", {"steps": 1, "delay_ms": 5000})
    async with channel(doors) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await pb_grpc.HubStub(ch).Call(slow, metadata=(("x-api-key", hub.admin_key),), timeout=1.0)
    assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    # the hub itself ended the call (just before the caller's deadline), so its error body came back
    assert grpc_error_body(failed.value)["error"]["code"] == "DEADLINE_EXCEEDED"
    async with asyncio.timeout(10):
        while await ended_by_deadline() < before + 1:
            await asyncio.sleep(0.05)


async def test_health_follows_ready_and_reflection_names_the_services(doors: Hub) -> None:
    async with channel(doors) as ch:
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        hub_health = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="democratic_ai.v2.Hub"), timeout=30)
        assert hub_health.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30)
        async for answer in stream:
            names = {s.name for s in answer.list_services_response.service}
            break
    assert {"democratic_ai.v2.Hub", "grpc.health.v1.Health"} <= names


def reflection_v1_client(tmp_path: Path) -> tuple[Any, Any]:
    """The request and response classes of reflection v1, compiled from the published proto's fields into a
    pool of their own: nothing is shared with the hub's server side."""
    fixtures = ROOT / "tests" / "fixtures"
    out = tmp_path / "reflection_v1.pb"
    assert protoc.main(["protoc", f"-I{fixtures}", f"--descriptor_set_out={out}",
                        str(fixtures / "grpc_reflection_v1.proto")]) == 0
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(file)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")))


async def test_reflection_v1_lists_and_describes_the_hub_as_grpcurl_asks(doors: Hub, tmp_path: Path) -> None:
    request, response = reflection_v1_client(tmp_path)
    async with channel(doors) as ch:
        info = ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                request_serializer=request.SerializeToString,
                                response_deserializer=response.FromString)
        stream = info(iter([request(list_services=""),
                            request(file_containing_symbol="democratic_ai.v2.Hub"),
                            request(file_containing_symbol="grpc.reflection.v1.ServerReflection")]), timeout=30)
        listed, hub_file, reflection_file = [answer async for answer in stream]
    assert {"democratic_ai.v2.Hub", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= {s.name for s in listed.list_services_response.service}
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in hub_file.file_descriptor_response.file_descriptor_proto]
    hub = next(svc for f in files if f.package == "democratic_ai.v2" for svc in f.service if svc.name == "Hub")
    assert {"Call", "CallStream", "ListCapabilities"} <= {m.name for m in hub.method}
    (v1,) = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in reflection_file.file_descriptor_response.file_descriptor_proto]
    assert (v1.name, v1.package, v1.service[0].method[0].input_type) == (
        "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1", ".grpc.reflection.v1.ServerReflectionRequest")
