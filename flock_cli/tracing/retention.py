"""``flock trace prune``: deleting runs from a trace store, in one transaction."""

from __future__ import annotations

from pathlib import Path

from flock_cli.private_files import owner_only_umask
from flock_cli.tracing.duck import check_trace_path, connect

__all__ = ["delete_runs"]


def delete_runs(path: Path, run_ids: list[str], *, wait: float, dry_run: bool = False) -> dict[str, int]:
    """Delete the runs ``run_ids`` (their spans, artifacts, events and status snapshots) from the
    store at ``path``; the rows deleted (or, with ``dry_run``, that would be) per table."""
    counts = {"runs": len(run_ids), "spans": 0, "artifacts": 0, "events": 0}
    if not run_ids:
        return counts
    check_trace_path(path, must_exist=True)
    with owner_only_umask():  # the WAL this write makes holds payloads too (private_files.py)
        con = connect(path, read_only=False, wait=wait)
        try:
            con.execute("CREATE TEMP TABLE doomed (trace_id VARCHAR)")
            con.executemany("INSERT INTO doomed VALUES (?)", [[run_id] for run_id in run_ids])
            con.execute("BEGIN TRANSACTION")
            for table in ("spans", "artifacts", "events", "status", "runs"):
                found = con.execute(
                    f"SELECT count(*) FROM {table} WHERE trace_id IN (SELECT trace_id FROM doomed)"
                ).fetchall()[0][0]
                if table in counts and table != "runs":
                    counts[table] = int(found)
                if not dry_run:
                    con.execute(f"DELETE FROM {table} WHERE trace_id IN (SELECT trace_id FROM doomed)")
            con.execute("ROLLBACK" if dry_run else "COMMIT")
            if not dry_run:
                con.execute("CHECKPOINT")
        finally:
            con.close()
    return counts
