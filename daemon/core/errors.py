"""The one exception root of the hub and its mapping to the contract's codes.

Every error a caller can see is a ``HubError`` leaf.  Doors never invent codes:
they read ``code``, ``http_status`` and ``grpc_status`` from the class, so the
table in shared/CONTRACT.md lives here and only here.

A message is a :class:`~daemon.core.i18n.Text` (a catalogue key and its values): ``message`` keeps
its English rendering, the one logs and tests read, and ``to_body`` renders it in the caller's language.
"""

from __future__ import annotations

from typing import Any, ClassVar

from daemon.core.i18n import DEFAULT_LANGUAGE, Text, language_var, t


class HubError(Exception):
    """Root of every error the hub reports to a caller."""

    code: ClassVar[str] = "UNAVAILABLE"
    http_status: ClassVar[int] = 503
    # the name of a grpc.StatusCode member; kept as text so this module does not import grpc
    grpc_status: ClassVar[str] = "UNAVAILABLE"

    def __init__(self, message: str | Text, details: dict[str, Any] | None = None) -> None:
        # a plain string is text the hub does not own (a peer's, a library's): relayed as it is
        self.text: Text = message if isinstance(message, Text) else t("errors.relayed", message=message)
        self.message: str = self.text.render(DEFAULT_LANGUAGE)
        super().__init__(self.message)
        self.details: dict[str, Any] = details or {}

    def render(self, lang: str | None = None) -> str:
        """The message in ``lang`` (en, ja, zh; English for any other); by default the caller's (``language_var``)."""
        return self.text.render(lang or language_var.get())

    def to_body(self, trace_id: str = "", lang: str | None = None) -> dict[str, Any]:
        """The contract's error body: ``{"error": {"code", "message", "details", "trace_id"}}``, in ``lang``."""
        return {
            "error": {
                "code": self.code,
                "message": self.render(lang),
                "details": self.details,
                "trace_id": trace_id,
            }
        }


class ValidationError(HubError):
    """A request that breaks the contract's schema or a record's rules; ``details`` names the field."""

    code, http_status, grpc_status = "VALIDATION_ERROR", 400, "INVALID_ARGUMENT"


class Unauthenticated(HubError):
    """No credential, or one that is unknown, expired or revoked."""

    code, http_status, grpc_status = "UNAUTHENTICATED", 401, "UNAUTHENTICATED"


class PermissionDenied(HubError):
    """A known caller whose role, scopes or tenant do not allow the operation."""

    code, http_status, grpc_status = "PERMISSION_DENIED", 403, "PERMISSION_DENIED"


class CapabilityNotFound(HubError):
    """No attached module offers the requested action (or the named module lacks it)."""

    code, http_status, grpc_status = "CAPABILITY_NOT_FOUND", 404, "NOT_FOUND"


class ModuleNotFound(HubError):
    """The envelope's ``target`` names a module that is not attached."""

    code, http_status, grpc_status = "MODULE_NOT_FOUND", 404, "NOT_FOUND"


class NotFound(HubError):
    """No such route, tenancy record (tenant, user, API key) or feature; another tenant's records answer this too."""

    code, http_status, grpc_status = "NOT_FOUND", 404, "NOT_FOUND"


class MethodNotAllowed(HubError):
    """A known path asked with an HTTP method it does not serve."""

    code, http_status, grpc_status = "METHOD_NOT_ALLOWED", 405, "UNIMPLEMENTED"


class Conflict(HubError):
    """A resource that already exists (a tenant or user name taken)."""

    code, http_status, grpc_status = "CONFLICT", 409, "ALREADY_EXISTS"


class PayloadTooLarge(HubError):
    """A body or message over the door's size limit; ``details.limit`` gives the bytes."""

    code, http_status, grpc_status = "PAYLOAD_TOO_LARGE", 413, "RESOURCE_EXHAUSTED"


class RateLimited(HubError):
    """A rate bucket is empty; ``retry_after``: seconds until a token is free; ``headers``: to send back."""

    code, http_status, grpc_status = "RATE_LIMITED", 429, "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str | Text,
        retry_after: float,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, {"retry_after": retry_after, **(details or {})})
        self.retry_after = retry_after
        self.headers: dict[str, str] = headers or {}


class CreditsExhausted(HubError):
    """The tenant's prepaid credits are spent; a top-up is needed before the next billed call."""

    code, http_status, grpc_status = "CREDITS_EXHAUSTED", 402, "FAILED_PRECONDITION"


class DeadlineExceeded(HubError):
    """The call's deadline passed while queued or running."""

    code, http_status, grpc_status = "DEADLINE_EXCEEDED", 504, "DEADLINE_EXCEEDED"


class ModuleError(HubError):
    """A module failed, broke its own contract, or reported impossible usage; maps to HTTP 502."""

    code, http_status, grpc_status = "MODULE_ERROR", 502, "INTERNAL"


class Unavailable(HubError):
    """The hub or a dependency (ledger, batcher) cannot serve now; ``retry_after``: when to try again, if known."""

    code, http_status, grpc_status = "UNAVAILABLE", 503, "UNAVAILABLE"

    def __init__(self, message: str | Text, details: dict[str, Any] | None = None, *,
                 retry_after: float | None = None) -> None:
        if retry_after is not None:
            details = {"retry_after": retry_after, **(details or {})}
        super().__init__(message, details)
        self.retry_after = retry_after


class InternalError(HubError):
    """A bug in the hub; logged with its traceback, answered with the contract's body."""

    code, http_status, grpc_status = "INTERNAL", 500, "INTERNAL"


class ConfigError(Exception):
    """A bad configuration file or value; names the key.  Not a caller-visible error."""


ERRORS_BY_CODE: dict[str, type[HubError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        Unauthenticated,
        PermissionDenied,
        CapabilityNotFound,
        ModuleNotFound,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        RateLimited,
        CreditsExhausted,
        DeadlineExceeded,
        ModuleError,
        Unavailable,
        InternalError,
    )
}


def error_from_body(body: dict[str, Any]) -> HubError:
    """Rebuild a HubError from a contract error body (remote modules, peers, clients)."""
    err = body.get("error", {}) if isinstance(body, dict) else {}
    cls = ERRORS_BY_CODE.get(str(err.get("code")), ModuleError)
    # the remote rendered its message already (in the language it was asked for): relayed as it is
    message = str(err.get("message", "remote error"))
    details = err.get("details") if isinstance(err.get("details"), dict) else None
    if cls is RateLimited:
        return RateLimited(t("errors.relayed", message=message),
                           retry_after=float((details or {}).get("retry_after", 1)))
    return cls(t("errors.relayed", message=message), details)
