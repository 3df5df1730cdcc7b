"""gRPC server reflection, v1 (``grpc.reflection.v1``) beside v1alpha, from one servicer.

grpcurl and newer tools ask v1 first; grpcio-reflection 1.81 ships only v1alpha (grpc/grpc#38576).
The two are one protocol: v1's proto is v1alpha's under another package, every message with the
same fields, numbers and types, so the same bytes are the same message in both.  One v1alpha
servicer therefore answers both services; on v1's method path its requests are read and its answers
written with the v1alpha classes.  The v1 file (v1alpha's, renamed) is added to the descriptor pool
as well, so a client can ask reflection to describe ``grpc.reflection.v1.ServerReflection`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """``grpc/reflection/v1/reflection.proto``: v1alpha's file with its package and type names renamed."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = V1_FILE
    proto.package = _V1_PACKAGE
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    for message in proto.message_type:
        for message_field in message.field:
            if message_field.HasField("type_name"):  # set only on message fields; setting it types the field
                message_field.type_name = message_field.type_name.replace(old, new, 1)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new, 1)
            method.output_type = method.output_type.replace(old, new, 1)
    return proto


def register_v1_file(pool: descriptor_pool.DescriptorPool) -> None:
    """Add the v1 file to ``pool`` unless it is there already (a second door in one process)."""
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.AddSerializedFile(v1_file_descriptor().SerializeToString())


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both reflection services."""
    register_v1_file(descriptor_pool.Default())
    servicer = reflection.aio.ReflectionServicer((*service_names, reflection.SERVICE_NAME, V1_SERVICE))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),))
