"""``flock serve``: the blackboard as an HTTP service (FastAPI on uvicorn, the ``[serve]`` extra).

Import :class:`~flock_cli.service.server.BlackboardHTTPService` through :func:`require` or
``Flock.serve()``, which name the extra when FastAPI or uvicorn is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flock_cli.errors import UsageError

if TYPE_CHECKING:
    from flock_cli.service.server import BlackboardHTTPService

__all__ = ["require"]


def require() -> type[BlackboardHTTPService]:
    """The service class, or a UsageError naming the extra to install."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"flock serve needs the [serve] extra ({exc.name} is missing): pip install 'flock-flow[serve]'"
        ) from None
    from flock_cli.service.server import BlackboardHTTPService

    return BlackboardHTTPService
