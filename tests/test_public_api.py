import flock_cli


def test_all_is_sorted_and_pinned() -> None:
    expected = [
        "AfterVisibility",
        "Agent",
        "AgentBuilder",
        "AgentComponent",
        "AgentIdentity",
        "AgentRunError",
        "AmbiguousTypeError",
        "Artifact",
        "BatchSpec",
        "BoardBusyError",
        "Budget",
        "Context",
        "DSPyEngine",
        "DuplicateAgentError",
        "EngineComponent",
        "EvalInputs",
        "EvalResult",
        "Flock",
        "FlockClosedError",
        "FlockError",
        "FunctionEngine",
        "IdleTimeoutError",
        "InvalidDeclarationError",
        "InvalidPayloadError",
        "JoinSpec",
        "LabelledVisibility",
        "ManualClock",
        "Model",
        "ModelCallsBlockedError",
        "ModelNotConfiguredError",
        "OutputError",
        "PrivateVisibility",
        "PublicVisibility",
        "RateLimit",
        "ResumeRefusedError",
        "RetryPolicy",
        "RunError",
        "RunSummary",
        "SequentialIds",
        "SystemClock",
        "TenantVisibility",
        "TestEngine",
        "TraceReader",
        "TraceStoreBusyError",
        "TraceStoreError",
        "TypeConflictError",
        "TypeRegistryError",
        "UnknownAgentError",
        "UnknownTypeError",
        "UsageError",
        "UserError",
        "Visibility",
        "block_model_calls",
        "flock_tool",
        "flock_type",
        "only_for",
    ]
    assert flock_cli.__all__ == expected
    for name in expected:
        assert getattr(flock_cli, name) is not None


def test_user_and_run_errors_are_separate_families() -> None:
    assert issubclass(flock_cli.InvalidPayloadError, flock_cli.UserError)
    assert issubclass(flock_cli.UnknownTypeError, flock_cli.UserError)
    assert issubclass(flock_cli.AgentRunError, flock_cli.RunError)
    assert issubclass(flock_cli.OutputError, flock_cli.RunError)
    assert not issubclass(flock_cli.RunError, flock_cli.UserError)
    assert not issubclass(flock_cli.UserError, flock_cli.RunError)


def test_heavy_libraries_are_not_imported() -> None:
    import subprocess
    import sys

    heavy = "('dspy', 'duckdb', 'textual', 'typer', 'llama_cpp', 'pydantic', 'yaml', 'jinja2', 'rich')"
    code = f"import sys, flock_cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_help_and_misuse() -> None:
    from flock_cli.cli import main

    assert main(["--help"]) == 0
    assert main(["--version"]) == 0
    assert main(["frobnicate"]) == 2
    assert main(["run", "recipe.yaml"]) == 2


def test_python_dash_m_runs_the_command() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "flock_cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("flock-flow ")
    done = subprocess.run([sys.executable, "-m", "flock_cli", "frobnicate"], capture_output=True, text=True)
    assert done.returncode == 2 and "No such command 'frobnicate'" in done.stderr
    assert "Traceback" not in done.stderr


def test_exports_map_matches_all() -> None:
    assert sorted(flock_cli._EXPORTS) == sorted(flock_cli.__all__)
    assert "Flock" in dir(flock_cli)


def test_help_does_not_import_the_runtime() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from flock_cli.cli import main; main(['--help']);"
        " heavy = ('asyncio', 'pydantic', 'yaml', 'jinja2', 'rich', 'flock_cli.core.orchestrator');"
        " print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip() == "[]"


def test_flock_settings_are_fixed_when_built_and_say_so() -> None:
    """Assigning a setting after construction would change nothing the runtime does: refused."""
    import pytest

    from flock_cli import Flock, UsageError

    flock = Flock("openai/gpt-4o-mini", max_agent_iterations=7)
    assert flock.model == "openai/gpt-4o-mini" and flock.max_agent_iterations == 7
    assert flock.role == "orchestrator" and flock.max_concurrency is None and flock.budget is None
    for name, value in [("model", "other"), ("max_agent_iterations", 5000), ("store", None)]:
        with pytest.raises(UsageError, match=f"Flock.{name} is fixed when the flock is built: pass {name}="):
            setattr(flock, name, value)
    assert flock.model == "openai/gpt-4o-mini"
