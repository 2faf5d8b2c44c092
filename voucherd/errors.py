"""Domain errors. Each carries the API error code and HTTP status it is reported with."""

from __future__ import annotations

from typing import Any


class VoucherdError(Exception):
    """Base of every error a client can be told about; leaves only set `code` and `status`."""

    code = "invalid_request"
    status = 400

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class InvalidRequest(VoucherdError):
    pass


class Unauthorized(VoucherdError):
    code = "unauthorized"
    status = 401


class Forbidden(VoucherdError):
    code = "forbidden"
    status = 403


class NotFound(VoucherdError):
    code = "not_found"
    status = 404


class Conflict(VoucherdError):
    code = "conflict"
    status = 409


class ListPaused(Conflict):
    code = "list_paused"


class ListExpired(Conflict):
    code = "list_expired"


class ListArchived(Conflict):
    code = "list_archived"


class ListExhausted(Conflict):
    code = "list_exhausted"


class TagTaken(Conflict):
    code = "tag_taken"


class ListNotActive(Conflict):
    code = "list_not_active"


class RequestTimeout(VoucherdError):
    code = "request_timeout"
    status = 408


class PayloadTooLarge(VoucherdError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(VoucherdError):
    code = "unsupported_media_type"
    status = 415


class Overloaded(VoucherdError):
    """Raised instead of queueing without bound; the reply carries Retry-After."""

    code = "overloaded"
    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(Overloaded):
    code = "not_ready"


class StorageUnavailable(Overloaded):
    """The journal could not write; nothing was acknowledged."""

    code = "storage_unavailable"
