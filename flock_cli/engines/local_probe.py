"""Whether this machine's llama.cpp build can run the local model, checked once in a child process.

pip compiles llama-cpp-python from source for the CPU it builds on. On a virtual machine that
advertises instructions it does not fully support (seen: AVX-512 and AMX on a 2-vCPU VM), that
native build dies with a segmentation fault on the first token, and a crash inside llama.cpp
takes the whole flock down without a word. So before a process loads the model for the first
time, a child process loads it and generates a few tokens; if the child dies, the run fails with
a message that says how to install a build that works. Success is remembered in a stamp beside
the model (keyed by the model, the llama.cpp libraries, the Python and the CPU), so this costs a
couple of seconds once per installation, not per run.

``python -m flock_cli.engines.local_probe MODEL.gguf`` is the child.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from flock_cli.errors import UserError

__all__ = ["LocalBuildError", "ensure_model_runs"]

PORTABLE_INSTALL = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir'
    " --no-deps llama-cpp-python==0.3.36"
)
_TIMEOUT = 300.0
_FAILED: dict[str, LocalBuildError] = {}


class LocalBuildError(UserError):
    """The installed llama.cpp cannot run the local model on this machine."""


def _build_key(model: Path) -> str:
    """What a successful probe depends on: the model file, the llama.cpp libraries, this Python
    and this CPU. Any change probes again."""
    parts = [str(model.resolve()), str(model.stat().st_size), str(model.stat().st_mtime_ns), sys.executable]
    spec = importlib.util.find_spec("llama_cpp")
    if spec is not None and spec.origin is not None:
        lib = Path(spec.origin).parent / "lib"
        for file in sorted(lib.glob("*")) if lib.is_dir() else []:
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    try:
        cpu = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        )
    except (OSError, StopIteration):
        cpu = os.uname().machine
    parts.append(cpu)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _stamp_file(model: Path) -> Path:
    return model.with_name(model.name + ".runs")


def ensure_model_runs(model: Path, *, command: Sequence[str] | None = None) -> None:
    """Raise LocalBuildError unless a child process can run ``model`` with this llama.cpp build
    (remembered once it could). ``command`` replaces the child's command line (for tests)."""
    key = _build_key(model)
    if key in _FAILED:  # one child per process and build: every later call fails the same way
        raise _FAILED[key]
    stamp = _stamp_file(model)
    try:
        if stamp.read_text().strip() == key:
            return
    except OSError:
        pass
    argv = list(command) if command is not None else [sys.executable, "-m", __name__, str(model)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise LocalBuildError(
            f"the local model did not answer a 4-token test within {_TIMEOUT:.0f} s on this machine"
        ) from None
    if done.returncode != 0:
        _FAILED[key] = _failure(done)
        raise _FAILED[key]
    with contextlib.suppress(OSError):  # a read-only cache: the probe simply runs again next time
        stamp.write_text(key + "\n")


def _failure(done: subprocess.CompletedProcess[str]) -> LocalBuildError:
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return LocalBuildError(
            f"llama.cpp crashed ({name}) running the local model on this machine: the installed"
            " llama-cpp-python was probably compiled for CPU instructions this machine cannot run"
            f" (a native build on a virtual machine). Install a portable build: {PORTABLE_INSTALL}"
        )
    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return LocalBuildError(f"the local model failed a 4-token test on this machine: {last}")


def _probe(model: str) -> None:
    from llama_cpp import Llama

    llama = Llama(model_path=model, n_ctx=256, n_threads=os.cpu_count() or 2, verbose=False)
    llama.create_chat_completion(
        messages=[{"role": "user", "content": 'Answer {"ok": true}'}],
        max_tokens=4,
        temperature=0.0,
        response_format={"type": "json_object"},
    )


if __name__ == "__main__":
    _probe(sys.argv[1])
