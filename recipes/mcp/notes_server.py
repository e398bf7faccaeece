"""A small MCP server over a folder of text notes (the MCP example recipe, recipes/notes_qa.yaml).

Tools: ``list_notes`` (the notes' names) and ``read_note`` (one note's text). The folder is the
first argument (default: ``notes`` beside this file); nothing outside it can be read.

Run it on its own with ``python recipes/mcp/notes_server.py [FOLDER]`` (stdio).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

FOLDER = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("notes")).resolve()
server = MCPServer("notes", instructions="Read the text notes of one folder.")


@server.tool()
def list_notes() -> list[str]:
    """The names of all notes (use one with read_note)."""
    return sorted(p.stem for p in FOLDER.glob("*.txt"))


@server.tool()
def read_note(name: str) -> str:
    """The full text of one note. Arguments: {"name": "wifi"} (a note's name, as list_notes gives it)."""
    path = (FOLDER / f"{Path(name).stem}.txt").resolve()
    if path.parent != FOLDER or not path.is_file():
        raise ToolError(f"there is no note called {name!r}; notes: {', '.join(list_notes())}")
    return path.read_text(encoding="utf-8")


if __name__ == "__main__":
    server.run("stdio")
