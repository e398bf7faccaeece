"""One workflow as a run: ``flock trace show|timeline|audit|metrics WORKFLOW_ID``.

A board that many processes serve for days (``flock run --watch``) makes board runs that hold
thousands of workflows. Given a workflow (correlation) id instead of a run id, the commands show
only that workflow: its artifacts, the agent runs that consumed or published them and the events
of either, from every process and store that holds some of it (``reader.Workflow``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from uuid import UUID

from flock_cli.errors import TraceStoreError
from flock_cli.tracing.run_summary import RunRow, Workflow

if TYPE_CHECKING:
    from flock_cli.tracing.reader import TraceReader

__all__ = ["is_workflow_id", "workflow_run"]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_workflow_id(ref: str) -> bool:
    """Whether ``ref`` is a workflow id (a UUID with its dashes; run ids are hex without them)."""
    return bool(_UUID.fullmatch(ref.strip()))


def workflow_run(reader: TraceReader, ref: str) -> RunRow:
    """The workflow ``ref`` as a row: its figures, and the process runs it went through when
    there were several. Raises TraceStoreError when no artifact of the stores carries that id."""
    cid = str(UUID(ref.strip()))
    scope = Workflow(cid)
    with reader.session():
        artifacts = reader.artifacts(scope)
        if not artifacts:
            raise TraceStoreError(f"no workflow {cid} in {reader.where}: no artifact has that correlation id")
        spans = reader.spans(scope)
        dead = len(reader.events(scope, ("dead_letter",)))
        traces = dict.fromkeys([a.trace_id for a in artifacts] + [s.trace_id for s in spans])
        runs = [r for r in reader.runs_by_id(list(traces)) if r.pid is not None]
    several = len({(r.host, r.pid) for r in runs}) > 1
    runs.sort(key=lambda r: (r.started_ns, r.run_id))
    costs = [float(s.attributes["llm.cost"]) for s in spans if "llm.cost" in s.attributes]
    tokens = sum(
        int(s.attributes.get("llm.input_tokens", 0)) + int(s.attributes.get("llm.output_tokens", 0))
        for s in spans
    )
    failed = sum(s.status == "error" for s in spans)
    return RunRow(
        cid, "workflow", min([a.created_ns for a in artifacts] + [s.start_ns for s in spans]),
        max([a.created_ns for a in artifacts] + [s.end_ns for s in spans]), "failed" if dead else "ok",
        len(artifacts), len(spans), failed, dead, tokens, sum(costs) if costs else None,
        processes=runs if several else [], workflow=cid,
    )  # fmt: skip
