"""Frames on a link stream: a 4-byte big-endian length, then that many bytes (sans-IO, no libp2p here).

``FrameDecoder`` takes whatever chunks the stream yields and returns whole frames; a length over the
limit raises ``FrameTooLarge`` before any of the body is buffered, so a peer cannot make us hold more
than ``max_frame`` plus one read of bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

HEADER = struct.Struct(">I")
#: what the 4-byte header can say; max_frame may not exceed it
MAX_ENCODABLE = 0xFFFF_FFFF


class FrameTooLarge(ValueError):
    """A frame whose length exceeds the link's limit (sent or announced by a peer)."""


def encode(frames: Iterable[bytes]) -> bytes:
    """The wire form of ``frames``, concatenated (one stream write for a batch)."""
    parts: list[bytes] = []
    for frame in frames:
        parts.append(HEADER.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


class FrameDecoder:
    """Reassembles frames from arbitrary chunks of a link stream."""

    __slots__ = ("_buffer", "_max_frame")

    def __init__(self, max_frame: int) -> None:
        if not 0 < max_frame <= MAX_ENCODABLE:
            raise ValueError(f"max_frame must be between 1 and {MAX_ENCODABLE}")
        self._max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """Whole frames completed by ``chunk`` (possibly none); ``FrameTooLarge`` on an oversized header."""
        self._buffer += chunk
        frames: list[bytes] = []
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, offset)
            if length > self._max_frame:
                raise FrameTooLarge(f"peer announced a {length}-byte frame; the limit is {self._max_frame}")
            end = offset + HEADER.size + length
            if len(buffer) < end:
                break
            frames.append(bytes(buffer[offset + HEADER.size : end]))
            offset = end
        if offset:
            del buffer[:offset]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buffer)
