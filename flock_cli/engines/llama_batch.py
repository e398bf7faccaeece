"""One thread that owns the local model and decodes every running call together.

llama.cpp is not thread-safe, so calls on one model used to take turns behind a lock: the news
agency's eight journalists waited for each other. A decoder thread instead keeps up to
:data:`SLOTS` calls going at once, each in a llama.cpp sequence of its own, and each step runs one
``llama_decode`` holding the next token of every call that is generating plus a chunk of the
prompt of every call that has just arrived (continuous batching, as llama.cpp's server does).
Eight sequences in one batch decode about twice as many tokens a second as one alone on two cores.

Prompts share their beginnings (an agent's system prompt and output schema), and the KV cache is
unified, so a sequence can take over another's cells for the tokens they share without copying
(``llama_memory_seq_cp``): a call starts from the longest prefix it shares with a prompt kept from
an earlier call (up to :data:`KEPT` prompts, least recently used dropped first) or with a call
under way; when the call under way has not evaluated the shared part yet, the new call waits for
it instead of evaluating the same tokens twice.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flock_cli.engines.llama_sampling import TokenSampler

__all__ = ["KEPT", "SLOTS", "BatchDecoder", "Generation"]

SLOTS = 8
"""Calls decoded at the same time; the ninth waits for a free sequence."""
KEPT = 8
"""Prompts kept in the KV cache after their call, for later calls that share a prefix."""
_BATCH = 512  # tokens per llama_decode (prompt chunks included)
_FOLLOW_MIN = 16  # a call waits for another's prompt only when that saves at least this many tokens


@dataclass(eq=False)
class Generation:
    """One call: its prompt, how to sample, when to stop; filled in by the decoder thread.

    ``on_text`` is called on the decoder thread with each token's text as it is made (it must
    not block), and with ``""`` once at the end; :attr:`done` is set when :attr:`finish_reason`
    (``stop``/``length``) or :attr:`error` is known."""

    prompt: list[int]
    sampler: TokenSampler
    max_tokens: int
    stops: list[bytes] = field(default_factory=list)
    on_text: Callable[[str], None] | None = None
    tokens: list[int] = field(default_factory=list)
    text: bytes = b""
    finish_reason: str | None = None
    error: BaseException | None = None
    reused: int = 0  # prompt tokens taken from the cache or another call, not evaluated again
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None  # when a sequence was free for it (the wait is started - submitted)
    done: threading.Event = field(default_factory=threading.Event)
    seq: int = -1
    n_past: int = 0  # tokens of this sequence in the KV cache
    leader: Generation | None = None  # whose prompt evaluation this call waits for
    _decoder: Any = None  # an incremental UTF-8 decoder for on_text

    @property
    def evaluated(self) -> int:
        """Prompt tokens this call evaluated itself."""
        return len(self.prompt) - self.reused


@dataclass
class _Kept:
    seq: int
    tokens: list[int]
    used: float


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class BatchDecoder:
    """Decodes :class:`Generation` s on ``context`` (a ``llama_cpp._internals.LlamaContext`` with
    ``n_seq_max >= SLOTS + KEPT`` and a unified KV cache) from a thread of its own."""

    def __init__(self, model: Any, context: Any) -> None:
        import llama_cpp as lc

        self._lc = lc
        self.model, self.context = model, context
        self.n_vocab = lc.llama_vocab_n_tokens(model.vocab)
        self.cells = lc.llama_n_ctx(context.ctx)
        self._batch = lc.llama_batch_init(_BATCH, 0, 1)
        self._waiting: deque[Generation] = deque()
        self._running: list[Generation] = []
        self._free = list(range(SLOTS))
        self._kept: list[_Kept] = []
        self._free_kept = list(range(SLOTS, SLOTS + KEPT))
        self._wake = threading.Condition()
        self._closing = False
        self.steps = 0  # llama_decode calls, and the seconds spent in them and in sampling
        self.decode_seconds = self.sample_seconds = 0.0
        self._thread = threading.Thread(target=self._loop, name="flock-llama-decoder", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the decoder thread (after its current step; calls still going fail) and free the
        batch. Called before the interpreter tears llama_cpp down (``local.py``'s exit hook)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return  # a step that never ends: leave its memory to the process's exit
        closed = RuntimeError("the local model was closed")
        for gen in list(self._running):
            self._finish(gen, error=closed)
        while self._waiting:  # never started: nothing of theirs is in the cache
            gen = self._waiting.popleft()
            gen.error = closed
            gen.sampler.close()
            gen.done.set()
            if gen.on_text is not None:
                gen.on_text("")
        self._lc.llama_batch_free(self._batch)

    def submit(self, gen: Generation) -> None:
        """Queue ``gen``; its ``done`` event is set when it is over."""
        with self._wake:
            self._waiting.append(gen)
            self._wake.notify()

    # --- the decoder thread -------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                with self._wake:
                    while not self._waiting and not self._running and not self._closing:
                        self._wake.wait()
                    if self._closing:
                        return
                    while self._waiting and self._free and self._fits(self._waiting[0]):
                        self._start(self._waiting.popleft())
                self._step()
            except Exception as exc:  # llama.cpp failed the batch: every call in it fails, loudly
                for gen in list(self._running):
                    self._finish(gen, error=exc)

    def _fits(self, gen: Generation) -> bool:
        """True when the KV cache holds ``gen`` at its longest beside the calls under way (kept
        prompts make room), so a batch never runs out of cells half-way; alone, a call fits."""
        need = sum(len(g.prompt) + g.max_tokens for g in self._running)
        return not self._running or need + len(gen.prompt) + gen.max_tokens <= self.cells

    def _memory(self) -> Any:
        return self.context.memory

    def _start(self, gen: Generation) -> None:
        gen.seq, gen.started = self._free.pop(), time.monotonic()
        self._running.append(gen)  # from here on, a failure fails it (and the caller hears of it)
        limit = len(gen.prompt) - 1  # one prompt token is always evaluated: its logits come first
        best = self._reuse(gen)
        for other in self._running:  # a call still evaluating a prompt this one shares: wait for it
            if other is not gen and other.n_past < len(other.prompt) and other.leader is None:
                shared = min(_common(other.prompt, gen.prompt), limit)
                if shared >= best + _FOLLOW_MIN:
                    self._lc.llama_memory_seq_rm(self._memory(), gen.seq, -1, -1)
                    gen.leader, gen.reused, gen.n_past = other, shared, 0
                    break

    def _reuse(self, gen: Generation) -> int:
        """Give ``gen`` the longest prefix of its prompt already in the KV cache (a kept prompt's
        or a running call's); the number of tokens taken."""
        limit = len(gen.prompt) - 1
        best, source, chosen = 0, -1, None
        for kept in self._kept:
            n = min(_common(kept.tokens, gen.prompt), limit)
            if n > best:
                best, source, chosen = n, kept.seq, kept
        for other in self._running:  # (gen itself has nothing evaluated yet: it adds nothing)
            n = min(_common(other.prompt[: min(other.n_past, len(other.prompt))], gen.prompt), limit)
            if n > best:
                best, source, chosen = n, other.seq, None
        if chosen is not None:
            chosen.used = time.monotonic()
        if best > 0:
            self._lc.llama_memory_seq_cp(self._memory(), source, gen.seq, 0, best)
        gen.n_past = gen.reused = best
        return best

    def _follow(self, gen: Generation) -> bool:
        """True when ``gen`` may evaluate its prompt: the call it waits for has evaluated the
        shared prefix (or has ended: then it takes what the cache holds)."""
        leader = gen.leader
        if leader is None:
            return True
        if leader in self._running and leader.n_past < gen.reused:
            return False
        gen.leader = None
        self._reuse(gen)
        return True

    def _step(self) -> None:
        lc, batch = self._lc, self._batch
        n = 0
        outputs: list[tuple[Generation, int]] = []
        for gen in self._running:  # every generating call adds its last token
            if gen.n_past >= len(gen.prompt) and gen.tokens:
                n = self._add(n, gen.tokens[-1], gen.n_past, gen.seq, True)
                outputs.append((gen, n - 1))
        for gen in self._running:  # prompts fill what is left of the batch
            if gen.n_past >= len(gen.prompt) or not self._follow(gen):
                continue
            chunk = gen.prompt[gen.n_past : gen.n_past + _BATCH - n]
            for i, token in enumerate(chunk):
                last = gen.n_past + i == len(gen.prompt) - 1
                n = self._add(n, token, gen.n_past + i, gen.seq, last)
            if gen.n_past + len(chunk) == len(gen.prompt):
                outputs.append((gen, n - 1))
            if n >= _BATCH:
                break
        if n == 0:  # only calls waiting for another's prompt: that one is in the next step
            return
        batch.n_tokens = n
        started = time.perf_counter()
        self._decode(batch)
        decoded = time.perf_counter()
        self.steps += 1
        self.decode_seconds += decoded - started
        evaluated: dict[int, int] = {}  # seq -> tokens this step added (1, or a prompt chunk)
        for i in range(n):
            evaluated[batch.seq_id[i][0]] = evaluated.get(batch.seq_id[i][0], 0) + 1
        for gen in self._running:
            gen.n_past += evaluated.get(gen.seq, 0)
        for gen, index in outputs:
            logits = lc.llama_get_logits_ith(self.context.ctx, index)
            self._next_token(gen, _floats(logits, self.n_vocab))
        self.sample_seconds += time.perf_counter() - decoded

    def _add(self, n: int, token: int, pos: int, seq: int, logits: bool) -> int:
        batch = self._batch
        batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
        batch.seq_id[n][0], batch.logits[n] = seq, logits
        return n + 1

    def _decode(self, batch: Any) -> None:
        while True:
            status = self._lc.llama_decode(self.context.ctx, batch)
            if status == 0:
                return
            if status == 1 and self._kept:  # no room in the KV cache: drop the oldest kept prompt
                self._drop(min(self._kept, key=lambda k: k.used))
                continue
            raise RuntimeError(
                "llama.cpp found no room in the KV cache for the calls under way"
                if status == 1
                else f"llama_decode failed ({status})"
            )

    def _next_token(self, gen: Generation, logits: Any) -> None:
        from llama_cpp import llama_vocab_is_eog

        token = gen.sampler.sample(logits)
        if llama_vocab_is_eog(self.model.vocab, token):
            self._finish(gen, "stop")
            return
        gen.sampler.accept(token)
        gen.tokens.append(token)
        piece = self.model.detokenize([token], special=False)
        gen.text += piece
        for stop in gen.stops:
            if stop in gen.text:
                gen.text = gen.text[: gen.text.index(stop)]
                self._finish(gen, "stop")
                return
        if gen.on_text is not None:
            if gen._decoder is None:
                import codecs

                gen._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            text = gen._decoder.decode(piece)
            if text:
                gen.on_text(text)
        if len(gen.tokens) >= gen.max_tokens:
            self._finish(gen, "length")

    def _finish(self, gen: Generation, reason: str | None = None, error: BaseException | None = None) -> None:
        gen.finish_reason, gen.error = reason, error
        if error is None:  # the answer as llama-cpp-python gives it: the tokens detokenized together
            text = self.model.detokenize(gen.tokens, special=False)
            cut = [stop for stop in gen.stops if stop in text]
            gen.text = text[: text.index(cut[0])] if cut else text
        self._running.remove(gen)
        if error is None:
            self._keep(gen)
        self._lc.llama_memory_seq_rm(self._memory(), gen.seq, -1, -1)
        self._free.append(gen.seq)
        gen.sampler.close()
        gen.done.set()
        if gen.on_text is not None:
            gen.on_text("")  # the end of the text

    def _keep(self, gen: Generation) -> None:
        """Keep ``gen``'s prompt in the cache (its cells are shared, not copied)."""
        n = min(len(gen.prompt), gen.n_past)
        for kept in list(self._kept):  # a kept prompt this one contains is no longer needed
            if _common(kept.tokens, gen.prompt) == len(kept.tokens) <= n:
                self._drop(kept)
        if not self._free_kept:
            self._drop(min(self._kept, key=lambda k: k.used))
        seq = self._free_kept.pop()
        self._lc.llama_memory_seq_cp(self._memory(), gen.seq, seq, 0, n)
        self._kept.append(_Kept(seq, gen.prompt[:n], time.monotonic()))

    def _drop(self, kept: _Kept) -> None:
        self._lc.llama_memory_seq_rm(self._memory(), kept.seq, -1, -1)
        self._kept.remove(kept)
        self._free_kept.append(kept.seq)


def _floats(pointer: Any, n: int) -> Any:
    import numpy as np

    return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(n,))
