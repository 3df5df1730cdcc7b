"""The transport's one exception, and the unwrapping of trio's nested exception groups into it."""

from __future__ import annotations


class TransportError(Exception):
    """A dial, send, ping or listen that failed; the message says which peer or address, and why."""


def unwrap(exc: BaseException) -> BaseException:
    """The first real cause inside nested ``BaseExceptionGroup``s (trio and libp2p nest them several deep).

    A group of one is peeled; a group of several yields its first member, since they share one cause in
    practice (every address of one peer refused, say) and a log line of one cause reads better than a tree.
    """
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """``Type: message`` of the unwrapped cause, for a TransportError's text or a log line."""
    cause = unwrap(exc)
    text = str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
