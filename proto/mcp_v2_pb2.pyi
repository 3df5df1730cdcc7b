import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

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
    __slots__ = ("session_id", "tenant_id", "user_id", "auth", "trace_id")
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
    def __init__(self, session_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., auth: _Optional[str] = ..., trace_id: _Optional[str] = ...) -> None: ...

class MCPMessage(_message.Message):
    __slots__ = ("id", "type", "source_module_id", "target_module_id", "action", "context", "payload", "timestamp", "correlation_id", "headers", "priority", "ttl", "origin_node", "hop_count", "visited_nodes")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
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
    def __init__(self, id: _Optional[str] = ..., type: _Optional[_Union[MessageType, str]] = ..., source_module_id: _Optional[str] = ..., target_module_id: _Optional[str] = ..., action: _Optional[str] = ..., context: _Optional[_Union[Context, _Mapping]] = ..., payload: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., ttl: _Optional[int] = ..., origin_node: _Optional[str] = ..., hop_count: _Optional[int] = ..., visited_nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("seq", "hash", "peer")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hash: str
    peer: PeerReceipt
    def __init__(self, seq: _Optional[int] = ..., hash: _Optional[str] = ..., peer: _Optional[_Union[PeerReceipt, _Mapping]] = ...) -> None: ...

class PeerReceipt(_message.Message):
    __slots__ = ("node", "seq", "hash")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    node: str
    seq: int
    hash: str
    def __init__(self, node: _Optional[str] = ..., seq: _Optional[int] = ..., hash: _Optional[str] = ...) -> None: ...

class CallResponse(_message.Message):
    __slots__ = ("id", "correlation_id", "module", "result", "receipt", "served_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    correlation_id: str
    module: str
    result: _struct_pb2.Value
    receipt: Receipt
    served_by: str
    def __init__(self, id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., module: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ..., served_by: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("progress", "message", "data")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    progress: float
    message: str
    data: _struct_pb2.Value
    def __init__(self, progress: _Optional[float] = ..., message: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class StreamPart(_message.Message):
    __slots__ = ("progress", "final")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    final: CallResponse
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., final: _Optional[_Union[CallResponse, _Mapping]] = ...) -> None: ...

class ListCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CapabilityInfo(_message.Message):
    __slots__ = ("action", "description", "input_schema", "output_schema", "streaming", "modules", "origin")
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
    def __init__(self, action: _Optional[str] = ..., description: _Optional[str] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., streaming: _Optional[bool] = ..., modules: _Optional[_Iterable[str]] = ..., origin: _Optional[str] = ...) -> None: ...

class ListCapabilitiesResponse(_message.Message):
    __slots__ = ("capabilities",)
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    capabilities: _containers.RepeatedCompositeFieldContainer[CapabilityInfo]
    def __init__(self, capabilities: _Optional[_Iterable[_Union[CapabilityInfo, _Mapping]]] = ...) -> None: ...

class ErrorBody(_message.Message):
    __slots__ = ("code", "message", "details", "trace_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    details: _struct_pb2.Struct
    trace_id: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., trace_id: _Optional[str] = ...) -> None: ...
