"""``flock mcp RECIPE``: a flock served to MCP clients (desktop assistants, IDEs) over stdio.

The server runs on the official ``mcp`` SDK (the ``[mcp]`` extra), imported only when the command
runs: :func:`require` names the extra when it is missing. :mod:`.tools` says what the tools do
(without the SDK), :mod:`.workflow` how far one correlation's workflow got, :mod:`.server` speaks
the protocol and runs the flock beside it, :mod:`.stdin` reads the client's messages.
"""

from __future__ import annotations

from flock_cli.errors import UsageError

__all__ = ["require"]


def require() -> None:
    """Check that the MCP SDK is importable, or raise a UsageError naming the extra to install."""
    try:
        import mcp.server  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f'flock mcp needs the [mcp] extra ({exc.name} is missing): pip install "flock-flow[mcp]"'
        ) from None
