import datetime
from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper

DESCRIPTOR: _descriptor.FileDescriptor

class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_TYPE_UNSPECIFIED: _ClassVar[MessageType]
    REQUEST: _ClassVar[MessageType]
    RESPONSE: _ClassVar[MessageType]
    EVENT: _ClassVar[MessageType]
    ERROR: _ClassVar[MessageType]
    STREAM_PART: _ClassVar[MessageType]
    STREAM_END: _ClassVar[MessageType]
MESSAGE_TYPE_UNSPECIFIED: MessageType
REQUEST: MessageType
RESPONSE: MessageType
EVENT: MessageType
ERROR: MessageType
STREAM_PART: MessageType
STREAM_END: MessageType

class Context(_message.Message):
    __slots__ = ("auth", "session_id", "tenant_id", "trace_id", "user_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    tenant_id: str
    user_id: str
    auth: str
    trace_id: str
    def __init__(self, session_id: str | None = ..., tenant_id: str | None = ..., user_id: str | None = ..., auth: str | None = ..., trace_id: str | None = ...) -> None: ...

class MCPMessage(_message.Message):
    __slots__ = ("action", "context", "correlation_id", "headers", "hop_count", "id", "origin_node", "payload", "priority", "source_module_id", "target_module_id", "timestamp", "ttl", "type", "visited_nodes")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: str | None = ..., value: str | None = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_NODE_FIELD_NUMBER: _ClassVar[int]
    HOP_COUNT_FIELD_NUMBER: _ClassVar[int]
    VISITED_NODES_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: MessageType
    source_module_id: str
    target_module_id: str
    action: str
    context: Context
    payload: _any_pb2.Any
    timestamp: _timestamp_pb2.Timestamp
    correlation_id: str
    headers: _containers.ScalarMap[str, str]
    priority: int
    ttl: int
    origin_node: str
    hop_count: int
    visited_nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: str | None = ..., type: MessageType | str | None = ..., source_module_id: str | None = ..., target_module_id: str | None = ..., action: str | None = ..., context: Context | _Mapping | None = ..., payload: _any_pb2.Any | _Mapping | None = ..., timestamp: datetime.datetime | _timestamp_pb2.Timestamp | _Mapping | None = ..., correlation_id: str | None = ..., headers: _Mapping[str, str] | None = ..., priority: int | None = ..., ttl: int | None = ..., origin_node: str | None = ..., hop_count: int | None = ..., visited_nodes: _Iterable[str] | None = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("hash", "seq")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hash: str
    def __init__(self, seq: int | None = ..., hash: str | None = ...) -> None: ...

class CallResponse(_message.Message):
    __slots__ = ("correlation_id", "id", "module", "receipt", "result")
    ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    id: str
    correlation_id: str
    module: str
    result: _struct_pb2.Value
    receipt: Receipt
    def __init__(self, id: str | None = ..., correlation_id: str | None = ..., module: str | None = ..., result: _struct_pb2.Value | _Mapping | None = ..., receipt: Receipt | _Mapping | None = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("data", "message", "progress")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    progress: float
    message: str
    data: _struct_pb2.Value
    def __init__(self, progress: float | None = ..., message: str | None = ..., data: _struct_pb2.Value | _Mapping | None = ...) -> None: ...

class StreamPart(_message.Message):
    __slots__ = ("final", "progress")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    final: CallResponse
    def __init__(self, progress: Progress | _Mapping | None = ..., final: CallResponse | _Mapping | None = ...) -> None: ...

class ListCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CapabilityInfo(_message.Message):
    __slots__ = ("action", "description", "input_schema", "modules", "origin", "output_schema", "streaming")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    action: str
    description: str
    input_schema: _struct_pb2.Struct
    output_schema: _struct_pb2.Struct
    streaming: bool
    modules: _containers.RepeatedScalarFieldContainer[str]
    origin: str
    def __init__(self, action: str | None = ..., description: str | None = ..., input_schema: _struct_pb2.Struct | _Mapping | None = ..., output_schema: _struct_pb2.Struct | _Mapping | None = ..., streaming: bool | None = ..., modules: _Iterable[str] | None = ..., origin: str | None = ...) -> None: ...

class ListCapabilitiesResponse(_message.Message):
    __slots__ = ("capabilities",)
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    capabilities: _containers.RepeatedCompositeFieldContainer[CapabilityInfo]
    def __init__(self, capabilities: _Iterable[CapabilityInfo | _Mapping] | None = ...) -> None: ...

class ErrorBody(_message.Message):
    __slots__ = ("code", "details", "message", "trace_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    details: _struct_pb2.Struct
    trace_id: str
    def __init__(self, code: str | None = ..., message: str | None = ..., details: _struct_pb2.Struct | _Mapping | None = ..., trace_id: str | None = ...) -> None: ...
