"""API errors as the emulator answers them: one exception type carrying status, error type and headers."""

from __future__ import annotations

from typing import Any

ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""HTTP status per error type (spec table); unknown types are answered with 500."""

STATUS_ERROR_TYPE: dict[int, str] = {status: error_type for error_type, status in ERROR_STATUS.items()}


class ApiError(Exception):
    """Raised anywhere in a handler; rendered as the API's error body by the app."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = dict(headers or {})


def invalid_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found_error", message)


def too_large(message: str) -> ApiError:
    return ApiError(413, "request_too_large", message)


def error_body(
    error_type: str, message: str, request_id: str | None, *, error_code: str | None = None
) -> dict[str, Any]:
    """``{"type": "error", "error": {"type": T, "message": M}, "request_id": ...}``; with ``error_code``,
    also ``error.details.error_code`` (as the API names the cause of some answers)."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error, "request_id": request_id}
