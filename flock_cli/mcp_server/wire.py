"""The stdio wire of ``flock mcp``: a request the MCP SDK cannot read still gets an answer.

The SDK reads each line with Pydantic's JSON parser. A line it cannot read (a lone surrogate such as
``"\\ud800"``, nesting deeper than its parser allows, JSON that is not JSON-RPC) is handed to the
server as an exception with no request id, and the server drops it: the client waits for an
answer that never comes. So each line is read first here; a request whose id can still be found
gets a JSON-RPC error naming what was wrong and where, and the SDK never sees it (a request nested
too deep even for Python's parser has its id found by a scan of the top level alone). Lines with
no id to answer (notifications, text that is not JSON) go on to the SDK as before.

Both the SDK's answers and these go through one :class:`SerialWriter`, one write at a time, so
lines never interleave on stdout.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from flock_cli.limits import check_values, format_value_path

__all__ = ["SerialWriter", "answered_lines"]


class SerialWriter:
    """An async text file for the SDK's ``stdio_server`` (``write`` and ``flush``) whose writes,
    from the SDK and from :func:`answered_lines`, happen one at a time."""

    def __init__(self, file: Any) -> None:
        import anyio

        self._file = anyio.wrap_file(file)  # writes go to a worker thread: the loop never blocks
        self._lock = anyio.Lock()

    async def write(self, text: str) -> int:
        """Write ``text`` once no other write is under way."""
        async with self._lock:
            written: int = await self._file.write(text)
            return written

    async def flush(self) -> None:
        """Flush once no write is under way."""
        async with self._lock:
            await self._file.flush()

    async def answer(self, line: str) -> None:
        """Write one whole message line and flush it."""
        async with self._lock:
            await self._file.write(line + "\n")
            await self._file.flush()


async def answered_lines(lines: AsyncIterable[str], out: SerialWriter) -> AsyncIterator[str]:
    """The lines of ``lines`` the SDK can read; each request it could not read is answered on
    ``out`` with a JSON-RPC error instead."""
    import mcp_types as types

    async for line in lines:
        try:
            types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        except Exception as exc:  # what the SDK would drop, unanswered
            refusal = _refusal(line, exc)
            if refusal is not None:
                await out.answer(refusal)
                continue
        yield line


def _refusal(line: str, error: Exception) -> str | None:
    """The JSON-RPC error answering ``line``, or None when there is no request id to answer."""
    import mcp_types as types

    try:
        message = json.loads(line)
    except RecursionError:
        # Nested deeper than even Python's parser goes: the request's own keys are still
        # found by a scan that does not descend.
        message = _top_level(line, ("id", "method"))
        reason = "nested too deep to read"
    except ValueError:
        return None  # not JSON: no id to answer (the SDK logs it)
    else:
        reason = str(error).splitlines()[0]
    if not isinstance(message, dict) or "method" not in message:
        return None
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return None  # a notification, or an id JSON-RPC does not allow
    problem = check_values(message, string_keys=True) if "params" in message else None
    if problem is not None:
        where = format_value_path(problem.path) if problem.path else ""
        code, reason = types.INVALID_PARAMS, f"{where}: {problem.message}" if where else problem.message
    else:
        code = types.INVALID_REQUEST
    answer = {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": code, "message": f"unreadable request: {reason}"},
    }
    # ensure_ascii: the reason may quote the very text that could not be read (a lone surrogate)
    return json.dumps(answer, ensure_ascii=True)


# A JSON string, or one of the characters that give JSON its structure.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]')


def _top_level(line: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The values of ``keys`` that are strings or numbers in the object ``line`` holds, found
    without parsing what is nested in it (so at any depth, in one pass); None when ``line`` is
    not an object."""
    found: dict[str, Any] = {}
    depth, key, after_colon = 0, None, -1
    for match in _TOKENS.finditer(line):
        token = match.group()
        if depth == 1 and after_colon >= 0:  # the text between ':' and this token is a value
            value_text = line[after_colon : match.start()].strip()
            if key in keys and key not in found:
                # not a plain value (an object, an array): not what is looked for
                with contextlib.suppress(ValueError, RecursionError):
                    found[key] = json.loads(value_text or token)
            after_colon = -1
            if token.startswith('"'):
                continue  # a value, not the next key
        if token in "{[":
            if depth == 0 and token == "[":
                return None
            depth += 1
        elif token in "}]":
            depth -= 1
            if depth == 0:
                return found
        elif token == ":" and depth == 1:
            after_colon = match.end()
        elif token.startswith('"') and depth == 1 and after_colon < 0:
            key = json.loads(token)
    return None
