"""Error answers of the service as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

__all__ = ["COMMON_ERRORS", "PROBLEM_JSON", "PROBLEM_RESPONSE", "Problem", "problem_response"]

PROBLEM_JSON = "application/problem+json"
PROBLEM_RESPONSE: dict[str, Any] = {
    "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
}
"""An OpenAPI response body: a problem document."""
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no token, or an unknown one", **PROBLEM_RESPONSE},
    429: {"description": "rate limit reached (see Retry-After)", **PROBLEM_RESPONSE},
}
"""The answers every authenticated route may give."""

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(Exception):
    """Raised by a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int, detail: str, *, headers: dict[str, str] | None = None, title: str | None = None, **extra: Any
) -> JSONResponse:
    """The problem document for ``status`` with ``detail`` (and extension members ``extra``)."""
    from starlette.responses import JSONResponse

    title = title or TITLES.get(status, "Error")
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)
