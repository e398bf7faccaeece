"""The asynchronous part of ``flock run``: attach, publish, wait or watch, stop on Ctrl-C.

The first Ctrl-C stops taking work: in-flight runs finish and partial batches flush
(``Flock.shutdown``). A second Ctrl-C aborts: in-flight runs are cancelled and, on a durable
board, their leases are released so the next ``flock run`` on the board runs them again.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from flock_cli.cli.common import err_console
from flock_cli.early_signals import STOP_SIGNALS, EarlySignals

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flock_cli.core.artifact import Artifact
    from flock_cli.core.orchestrator import Flock
    from flock_cli.core.summary import RunSummary
    from flock_cli.recipe.loader import Recipe

__all__ = ["Outcome", "RunSession"]


@dataclass
class Outcome:
    """What a run left: its summary, the artifacts since it started, how it ended."""

    summary: RunSummary
    artifacts: list[Artifact]
    interrupted: int  # Ctrl-C (or SIGTERM) count
    timed_out: bool
    durable: bool  # the board outlives the process
    unpublished: int = 0  # inputs not published because Ctrl-C came first
    watch: bool = False  # a --watch run: pending groups may still fill from later publishes
    trace_run: str | None = None  # the run's id in the trace store (None: tracing off)
    trace_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The run did what it was asked: no failure, and (without ``--watch``) no workflow left
        waiting in a gate that nothing left can complete."""
        incomplete = bool(self.summary.stuck_groups) and not self.watch
        return self.summary.ok and not incomplete and not self.timed_out and self.interrupted < 2


class RunSession:
    """One ``flock run``: publish, wait (or watch), and stop cleanly on Ctrl-C."""

    def __init__(
        self,
        flock: Flock,
        recipe: Recipe,
        inputs: list[BaseModel],
        *,
        watch: bool,
        timeout: float | None,
        force: bool,
        quiet: bool,
        correlation_id: UUID | None,
        nothing_to_run: str,
        trace_attributes: dict[str, Any] | None = None,
        early: EarlySignals | None = None,
    ) -> None:
        self.flock = flock
        self.recipe = recipe
        self.inputs = inputs
        self.watch = watch
        self.timeout = timeout
        self.force = force
        self.quiet = quiet
        self.correlation_id = correlation_id  # shared by the inputs (None: each its own workflow)
        self.nothing_to_run = nothing_to_run  # the message when there are no inputs and no work left
        self.trace_attributes = trace_attributes or {}
        self.early = early  # signals that came while the run was set up
        self.interrupts = 0
        self.stop = asyncio.Event()
        self.abort = asyncio.Event()

    def on_sigint(self, progress: Any) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            self.stop.set()
            note = "stopping: no new runs start; runs in flight finish (a second Ctrl-C or SIGTERM aborts)"
            if progress is not None:
                progress.note = note
            if progress is None or not progress.enabled:
                err_console().print(note)
        else:
            self.abort.set()

    async def run(self) -> Outcome:
        """The whole run, as one traced run named after the recipe."""
        # Ctrl-C counts from the run's first moment: starting the trace store's ingest process
        # takes a while, and a Ctrl-C then stops the run before it publishes anything, with its
        # summary, rather than ending the process with nothing said. ``_run`` takes the signals
        # over once its progress display exists, and gives them back when the run is over.
        self._take_signals(None)
        for _ in range(self.early.count if self.early is not None else 0):
            self.on_sigint(None)  # a Ctrl-C while the flock was built: stop before publishing
        try:
            async with self.flock.traced_run(self.recipe.name, **self.trace_attributes) as scope:
                outcome = await self._run()
                # one Ctrl-C is how a --watch run ends; anywhere else the run did not finish
                if outcome.interrupted > 1:
                    scope.outcome = "aborted"
                elif outcome.interrupted and not self.watch:
                    scope.outcome = "interrupted"
                elif not outcome.ok:  # the store says what the command says (and its exit code)
                    scope.outcome = "failed"
        except BaseException:
            self._give_signals_back()
            raise
        outcome.trace_run = scope.trace_id if self.flock.tracer.writes_store else None
        outcome.trace_problems = self.flock.tracer.problems
        return outcome

    def _take_signals(self, progress: Any) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.on_sigint, progress)

    def _give_signals_back(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)

    async def _run(self) -> Outcome:
        from flock_cli.cli.progress import LiveProgress
        from flock_cli.core.session import ResumeRefusedError
        from flock_cli.errors import IdleTimeoutError

        flock = self.flock
        loop = asyncio.get_running_loop()
        timed_out = False
        summaries: list[RunSummary] = []
        published = 0
        with LiveProgress(flock, enabled=not self.quiet, title=self.recipe.name) as progress:
            # Signals first: agents start running while the inputs are still being published.
            self._take_signals(progress)
            try:
                try:
                    await flock.attach(force=self.force)
                except ResumeRefusedError as exc:
                    raise ResumeRefusedError(
                        f"{exc} From the command line: flock run --force, or choose another --board."
                    ) from None
                # On a shared board, work the others left (pending, leased by a dead process,
                # unrouted) is this run's to help with too.
                waiting = flock.store.shared and sum(await flock.store.open_work()) > 0
                if not (self.inputs or self.watch or waiting or any(flock.resumed.values())):
                    from flock_cli.errors import UsageError

                    await flock.shutdown()
                    await flock.store.close()
                    raise UsageError(self.nothing_to_run)
                started = flock.clock.now()
                for model in self.inputs:
                    if self.stop.is_set():
                        break  # Ctrl-C while publishing: the rest is not published (and reported)
                    await flock.publish(model, correlation_id=self.correlation_id)
                    published += 1
                if self.watch and self.timeout is not None:  # serve for that long, then stop
                    loop.call_later(self.timeout, self.stop.set)
                work = asyncio.ensure_future(
                    flock.watch(stop=self.stop) if self.watch else flock.run_until_idle(self.timeout)
                )
                await _until(work, self.stop)
                if self.watch:  # watch() returns soon after the stop with its summary
                    await _until(work, self.abort)
                if work.done():
                    try:
                        summaries.append(work.result())
                    except IdleTimeoutError as exc:
                        summaries.append(exc.summary)
                        timed_out = True
                        err_console().print(f"[bold red]error:[/] {exc}")
                else:
                    await _cancel(work)
                summaries.append(await self._shutdown(timed_out))
            finally:
                self._give_signals_back()
        artifacts = await _produced_since(flock, started)
        await flock.store.close()
        return Outcome(
            _merge(summaries),
            artifacts,
            self.interrupts,
            timed_out,
            flock.store.durable,
            unpublished=len(self.inputs) - published,
            watch=self.watch,
        )

    async def _shutdown(self, timed_out: bool) -> RunSummary:
        if timed_out:
            return await self.flock.shutdown(timeout=0, release_interrupted=True)
        # After a Ctrl-C no new run starts; otherwise everything still queued runs to the end.
        graceful = asyncio.ensure_future(self.flock.shutdown(drain=not self.stop.is_set()))
        await _until(graceful, self.abort)
        if graceful.done():
            return graceful.result()
        await _cancel(graceful)
        return await self.flock.shutdown(timeout=0, release_interrupted=True)


async def _until(task: asyncio.Future[Any], event: asyncio.Event) -> None:
    """Wait until ``task`` is done or ``event`` is set, whichever comes first."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


async def _cancel(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _produced_since(flock: Flock, since: Any) -> list[Artifact]:
    from flock_cli.store.contract import UNRESTRICTED, ArtifactQuery

    page = await flock.store.query(ArtifactQuery(since=since), viewer=UNRESTRICTED)
    return page.items


def _merge(summaries: list[RunSummary]) -> RunSummary:
    """One summary for the whole command (the run's and the shutdown's)."""
    from flock_cli.core.summary import RunSummary

    return RunSummary.merged(summaries)
