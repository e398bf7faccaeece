"""``flock board list|show|lineage|dead``: read the durable blackboard.

As the operator by default, seeing every artifact (whoever holds the board file can read it all
anyway); with ``--as NAME`` through the reads an agent's ``ctx.board`` makes (``viewer.py``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from uuid import UUID

import typer

from flock_cli.cli.common import (
    EXIT_FAILED,
    board_path,
    console,
    emit_json,
    err_console,
    fail,
    load,
    open_board,
    parse_uuid,
    reports_errors,
)
from flock_cli.cli.viewer import AsOpt, LabelOpt, TenantOpt, Who, viewer_json
from flock_cli.errors import printable

if TYPE_CHECKING:
    from flock_cli.core.artifact import Artifact
    from flock_cli.core.board import BoardView
    from flock_cli.core.visibility import AgentIdentity
    from flock_cli.store.contract import BlackboardStore, Page

__all__ = ["board_app"]

T = TypeVar("T")

board_app = typer.Typer(
    name="board",
    help="Inspect the durable blackboard: artifacts, payloads, lineage, dead letters. Reads are"
    " unrestricted (you see every artifact, whatever its visibility) unless --as NAME reads as an"
    " agent or tenant would.",
    no_args_is_help=True,
)
BoardOpt = Annotated[
    str | None,
    typer.Option(
        "--board",
        metavar="PATH|URL",
        help="Board file or postgresql:// URL (default: $FLOCK_BOARD, --recipe's board, or the one"
        " in .flock/).",
    ),
]
RecipeOpt = Annotated[
    Path | None, typer.Option("--recipe", "-r", metavar="FILE", help="Use this recipe's board.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="An artifact id, or a unique prefix of one.")]


def _with_board(
    path: str | None,
    recipe: Path | None,
    action: Callable[[BlackboardStore], Awaitable[T]],
) -> T:
    return _reading(path, recipe, Who(None, None, None), lambda store, _: action(store))[1]


def _reading(
    path: str | None,
    recipe: Path | None,
    who: Who,
    action: Callable[[BlackboardStore, AgentIdentity | None], Awaitable[T]],
) -> tuple[AgentIdentity | None, T]:
    """Run ``action`` on the board with the identity ``who`` names (None: the operator's view)."""
    import asyncio

    loaded = load(recipe) if recipe else None
    identity = who.identity(loaded)  # a bad --as is refused before the board is opened
    store = open_board(board_path(path, loaded), must_exist=True)

    async def go() -> T:
        try:
            return await action(store, identity)
        finally:
            await store.close()

    return identity, asyncio.run(go())


def _view(store: BlackboardStore, identity: AgentIdentity) -> BoardView:
    """The view an agent with ``identity`` gets as ``ctx.board`` ("now" is the store's clock)."""
    from flock_cli.core.board import BoardView

    return BoardView(store, identity, store.clock)


@board_app.command("list")
@reports_errors
def list_artifacts(
    board: BoardOpt = None,
    recipe: RecipeOpt = None,
    types: Annotated[
        list[str] | None, typer.Option("--type", "-t", metavar="TYPE", help="Only this type (repeatable).")
    ] = None,
    produced_by: Annotated[
        list[str] | None, typer.Option("--from", metavar="AGENT", help="Only from this agent (repeatable).")
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", metavar="UUID", help="Only this correlation id.")
    ] = None,
    tags: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Only artifacts with this tag (repeatable)."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="N", min=1, help="At most this many (newest).")
    ] = 50,
    as_name: AsOpt = None,
    tenant: TenantOpt = None,
    labels: LabelOpt = None,
    as_json: JsonOpt = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", metavar="URL", help="Read through a running `flock serve` at URL (as its token sees)."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", metavar="TOKEN", help="The service token (default: $FLOCK_TOKEN)."),
    ] = None,
) -> None:
    """List artifacts, newest first, with their type, producer, correlation and payload: every
    artifact, or with --as only those the identity may see; with --url, those the service's
    token may see."""
    from flock_cli.store.contract import UNRESTRICTED, ArtifactQuery

    if url is not None:
        if board is not None or recipe is not None or as_name is not None:
            fail("--url reads through a service as its token sees: --board, --recipe and --as do not apply")
        _list_remote(url, token, types, produced_by, correlation_id, tags, limit, as_json)
        return
    if token is not None:
        fail("--token goes with --url (a running flock serve)")

    query = ArtifactQuery(
        types=frozenset(types) if types else None,
        produced_by=frozenset(produced_by) if produced_by else None,
        correlation_id=parse_uuid(correlation_id, "--correlation-id") if correlation_id else None,
        tags=frozenset(tags) if tags else None,
        limit=limit,
        newest_first=True,
    )

    async def read(store: BlackboardStore, identity: AgentIdentity | None) -> tuple[Page, set[str]]:
        if identity is None:
            page = await store.query(query, viewer=UNRESTRICTED)
        else:
            page = await _view(store, identity).query(query)
        held: set[str] = set()
        if page.total == 0 and types:  # a misspelt type reads like an empty board: say which are there
            held = set((await store.summarize(viewer=UNRESTRICTED)).by_type)
        return page, held

    identity, (page, held) = _reading(board, recipe, Who(as_name, tenant, labels), read)
    asked = set(types or ())
    if held and not asked & held:
        missing, present = ", ".join(sorted(asked)), ", ".join(sorted(held))
        err_console().print(f"note: the board holds no {missing}; its types: {present}", markup=False)
    if as_json:
        emit_json(
            {
                "total": page.total,
                "viewer": viewer_json(identity),
                "artifacts": [a.model_dump(mode="json") for a in page.items],
            }
        )
        return
    _print_page(page.items, page.total, identity.name if identity is not None else None)


def _print_page(items: list[Artifact], total: int, viewer: str | None) -> None:
    """The artifacts table of ``board list``."""
    from rich import box
    from rich.table import Table

    seen = f" {viewer} may see" if viewer is not None else ""
    table = Table(
        title=f"{len(items)} of {total} artifacts{seen} (newest first)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    type_width = min(24, max([4, *(len(a.type) for a in items)]))  # at least the header
    from_width = min(20, max([4, *(len(a.produced_by) for a in items)]))
    widths = {"id": 8, "created": 8, "type": type_width, "from": from_width, "corr": 8}
    if console().width < 110:  # a narrow terminal: keep room for the payload
        del widths["created"], widths["corr"]
    # Fixed widths that add up to the terminal: Rich would otherwise squeeze the short columns away.
    payload_width = max(12, console().width - sum(widths.values()) - 3 * len(widths) - 2)
    for column, width in {**widths, "payload": payload_width}.items():
        table.add_column(column, no_wrap=True, overflow="ellipsis", width=width + 1)
    for a in items:
        cells = {
            "id": str(a.id)[:8],
            "created": a.created_at.strftime("%H:%M:%S"),
            "type": a.type,
            "from": a.produced_by,
            "corr": str(a.correlation_id)[:8] if a.correlation_id else "",
        }
        table.add_row(*(cells[c] for c in widths), _preview(a, payload_width))
    console().print(table, soft_wrap=False)  # fit the terminal; payloads end in an ellipsis


def _list_remote(
    url: str,
    token: str | None,
    types: list[str] | None,
    produced_by: list[str] | None,
    correlation_id: str | None,
    tags: list[str] | None,
    limit: int,
    as_json: bool,
) -> None:
    """``board list --url``: the same listing through ``GET /v1/artifacts``."""
    from flock_cli.cli.remote import ServiceClient
    from flock_cli.core.artifact import Artifact

    if correlation_id is not None:
        parse_uuid(correlation_id, "--correlation-id")
    params: dict[str, Any] = {"limit": min(limit, 1000), "order": "newest"}
    if types:
        params["type"] = types
    if produced_by:
        params["produced_by"] = produced_by
    if correlation_id:
        params["correlation_id"] = correlation_id
    if tags:
        params["tag"] = tags
    client = ServiceClient(url, token)
    try:
        me = client.whoami()
        page = client.artifacts(params)
    finally:
        client.close()
    if as_json:
        viewer = {"name": me["name"], "tenant": me["tenant"], "labels": me["labels"]}
        emit_json({"total": page["total"], "viewer": viewer, "artifacts": page["items"]})
        return
    _print_page([Artifact.model_validate(item) for item in page["items"]], page["total"], me["name"])


@board_app.command("show")
@reports_errors
def show(
    artifact_id: IdArg,
    board: BoardOpt = None,
    recipe: RecipeOpt = None,
    as_name: AsOpt = None,
    tenant: TenantOpt = None,
    labels: LabelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one artifact: every header field and the whole payload. With --as, an artifact the
    identity may not see is an error (exit 1) that names its visibility."""

    async def read(store: BlackboardStore, identity: AgentIdentity | None) -> Artifact:
        return await _find_as(store, artifact_id, identity)

    artifact = _reading(board, recipe, Who(as_name, tenant, labels), read)[1]
    if as_json:
        emit_json(artifact.model_dump(mode="json"))
        return
    out = console()
    out.print(f"[bold]{artifact.type}[/] {artifact.id}")
    for label, value in (
        ("produced by", artifact.produced_by),
        ("created", artifact.created_at.isoformat()),
        ("correlation", artifact.correlation_id),
        ("visibility", artifact.visibility.describe()),
        ("tags", ", ".join(sorted(artifact.tags)) or "-"),
    ):
        out.print(f"  {label:<12} {value}")
    from rich.syntax import Syntax

    out.print(
        Syntax(
            json.dumps(_plain(artifact.payload), indent=2, default=str), "json", background_color="default"
        )
    )


@board_app.command("lineage")
@reports_errors
def lineage(
    artifact_id: IdArg,
    board: BoardOpt = None,
    recipe: RecipeOpt = None,
    as_name: AsOpt = None,
    tenant: TenantOpt = None,
    labels: LabelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What an artifact was derived from and what was derived from it. With --as, only what the
    identity may see (an artifact it may not see is an error, exit 1)."""

    async def collect(
        store: BlackboardStore, identity: AgentIdentity | None
    ) -> tuple[Artifact, list[Artifact], list[Artifact]]:
        from flock_cli.store.contract import UNRESTRICTED

        artifact = await _find_as(store, artifact_id, identity)
        if identity is None:
            found = await store.lineage(artifact.id, viewer=UNRESTRICTED)
            parents = await store.get_many(found.parents, viewer=UNRESTRICTED)
            children = await store.get_many(found.children, viewer=UNRESTRICTED)
            return artifact, parents, children
        view = _view(store, identity)
        found = await store.lineage(artifact.id, viewer=identity, now=store.clock.now())
        return artifact, await view.get_many(found.parents), await view.get_many(found.children)

    identity, (artifact, parents, children) = _reading(board, recipe, Who(as_name, tenant, labels), collect)
    if as_json:
        emit_json(
            {
                "viewer": viewer_json(identity),
                "artifact": artifact.model_dump(mode="json"),
                "parents": [a.model_dump(mode="json") for a in parents],
                "children": [a.model_dump(mode="json") for a in children],
            }
        )
        return
    from rich.tree import Tree

    tree = Tree(f"[bold]{artifact.type}[/] {str(artifact.id)[:8]} from {artifact.produced_by}")
    up = tree.add(f"derived from ({len(parents)})")
    for a in parents:
        up.add(f"{a.type} {str(a.id)[:8]} from {a.produced_by}")
    down = tree.add(f"led to ({len(children)})")
    for a in children:
        down.add(f"{a.type} {str(a.id)[:8]} from {a.produced_by}")
    console().print(tree)


@board_app.command("dead")
@reports_errors
def dead_letters(board: BoardOpt = None, recipe: RecipeOpt = None, as_json: JsonOpt = False) -> None:
    """List dead letters: runs that failed for good, work a circuit breaker held, expired embargoes."""
    letters = _with_board(board, recipe, lambda store: store.dead_letters())
    if as_json:
        emit_json([letter.model_dump(mode="json") for letter in letters])
        return
    from rich.markup import escape

    out = console()
    if not letters:
        out.print("no dead letters")
        return
    out.print(f"[bold]{len(letters)} dead letter(s)[/], oldest first")
    for letter in letters:
        inputs = ", ".join(str(i)[:8] for i in letter.artifact_ids)
        why = f"{letter.error_type}: {letter.error}" if letter.error_type else letter.reason
        out.print(
            f"  {str(letter.id)[:8]} {letter.created_at:%H:%M:%S} [red]{escape(letter.reason)}[/]"
            f" {escape(letter.agent)} on {inputs}: {escape(printable(str(why)))}"
            + (f" (after {letter.attempts} attempts)" if letter.attempts > 1 else "")
        )


async def _find_as(store: BlackboardStore, text: str, identity: AgentIdentity | None) -> Artifact:
    """The artifact ``text`` names, read as ``identity``. The id is resolved as the operator (who
    may see every id anyway), so a prefix scan records no denials for the identity; then the one
    artifact is read through the identity's view."""
    artifact = await _find(store, text)
    if identity is None:
        return artifact
    seen = await _view(store, identity).get(artifact.id)
    if seen is None:
        visibility = artifact.visibility.describe()
        fail(f"{identity.name} may not see artifact {artifact.id} (visibility {visibility})", EXIT_FAILED)
    return seen


async def _find(store: BlackboardStore, text: str) -> Artifact:
    from flock_cli.store.contract import UNRESTRICTED

    try:
        wanted = UUID(text)
    except ValueError:
        wanted = None
    if wanted is not None:
        artifact = await store.get(wanted, viewer=UNRESTRICTED)
        if artifact is None:
            fail(f"no artifact {text} on the board")
        return artifact
    prefix = text.lower().replace("-", "")
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        fail(f"{text!r} is not an artifact id (give the id or at least 4 of its first hex digits)")
    matches = [a for a in await store.list(viewer=UNRESTRICTED) if a.id.hex.startswith(prefix)]
    if not matches:
        fail(f"no artifact id starts with {text}")
    if len(matches) > 1:
        fail(f"{len(matches)} artifacts start with {text}; give more digits")
    return matches[0]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _preview(artifact: Artifact, width: int = 60) -> str:
    text = printable(json.dumps(_plain(artifact.payload), default=str, ensure_ascii=False))
    return text if len(text) <= width else text[: width - 1] + "…"
