"""Choosing the next token the way llama.cpp's own sampler does: the grammar only when needed.

llama-cpp-python puts a JSON-schema grammar into its sampler chain, so the grammar judges every
one of the vocabulary's ~152,000 tokens at every step (about 37 ms a token on two cores, for a
0.5B model that decodes a token in 50-60 ms). llama.cpp's ``common_sampler_sample``
(common/sampling.cpp) samples from the raw logits first and asks the grammar about the one token
it chose; only when the grammar rejects that token are all candidates masked and the token sampled
again. The answer is the same: for greedy decoding exactly (the penalties and the grammar's mask
are applied token by token, so their order does not change the best token); with a temperature,
a token the grammar allows keeps its chance, as in llama.cpp.

The sampler chain is the one llama-cpp-python builds for a chat completion (``Llama._init_sampler``
with ``create_chat_completion``'s defaults): the repeat penalty over generated tokens (the same
binding called with the same arguments, so it weighs what it weighed before), then greedy at
temperature 0, else top-k 40, typical 1.0, top-p, min-p 0.05, temperature, and a seeded draw.
The grammar is built from the JSON schema as llama-cpp-python builds it for
``response_format={"type": "json_object", "schema": ...}``.

Greedy decoding (temperature 0, the default) looks only at a shortlist: the :data:`SHORTLIST` tokens
with the highest raw logits (and any tied with the last). The repeat penalty only lowers a logit,
so when the best penalized token of the shortlist is still at least the shortlist's lowest raw
logit, no token outside it can beat it, and greedy (the first highest, by token id) picks what it
would pick over the whole vocabulary. When the grammar rejects that token, the grammar and the
chain are applied to longer shortlists in turn (:data:`SHORTLIST`, then 8 and 64 and 512 times as
many tokens) under the same test; only when none settles it is the whole vocabulary masked. The
grammar's cost grows with the tokens it judges: a rejection (one token in seven in a JSON answer;
three in four are settled by the first 64, the opening ``{"`` ranks around 15,000th) costs
0.1-10 ms instead of 30-50 ms, and the penalties judge 64 tokens instead of 152,000.
"""

from __future__ import annotations

import ctypes
import json
import random
import threading
from typing import Any

__all__ = ["SHORTLIST", "TokenSampler", "grammar_for", "next_seed"]

SHORTLIST = 64
"""Greedy decoding: the tokens with the highest raw logits judged before the whole vocabulary."""
_WIDER = (SHORTLIST, 8 * SHORTLIST, 64 * SHORTLIST, 512 * SHORTLIST)  # after a rejection
PENALTY_LAST_N = 64  # llama-cpp-python's last_n_tokens_size
_TOP_K, _MIN_P, _TYPICAL_P, _TOP_P = 40, 0.05, 1.0, 0.95  # create_chat_completion's defaults
_grammars: dict[str, bytes] = {}  # response_format (as JSON) -> GBNF text: building it is Python work
_seed_lock = threading.Lock()
_seed_state: list[int] = []


def grammar_for(response_format: dict[str, Any] | None) -> bytes | None:
    """The GBNF grammar llama-cpp-python uses for ``response_format`` (None: unconstrained)."""
    if not response_format or response_format.get("type") != "json_object":
        return None
    key = json.dumps(response_format, sort_keys=True)
    grammar = _grammars.get(key)
    if grammar is None:
        from llama_cpp import llama_chat_format

        # the very function create_chat_completion calls (a schema it cannot translate falls back
        # to plain JSON there too), so answers stay what they were
        built = llama_chat_format._grammar_for_response_format(response_format)  # type: ignore[arg-type]
        grammar = _grammars[key] = built._grammar.encode("utf-8")
    return grammar


def next_seed() -> int:
    """A seed for a call that gives none: a sequence derived from llama.cpp's default seed, as
    llama-cpp-python derives one per call (so runs of one process repeat)."""
    import llama_cpp

    with _seed_lock:
        previous = _seed_state[0] if _seed_state else llama_cpp.LLAMA_DEFAULT_SEED
        seed = random.Random(previous).randint(0, 2**32 - 1)
        _seed_state[:] = [seed]
        return seed


class TokenSampler:
    """One generation's sampler: call :meth:`sample` with a step's logits, then :meth:`accept`
    the token kept. Not thread-safe (one decoder thread drives it); :meth:`close` frees it."""

    def __init__(
        self,
        vocab: Any,
        n_vocab: int,
        grammar: bytes | None,
        *,
        temperature: float,
        top_p: float | None,
        seed: int | None,
        repeat_penalty: float,
    ) -> None:
        import llama_cpp as lc
        import numpy as np

        self._lc, self._np = lc, np
        self.n_vocab = n_vocab
        self.grammar_checks = 0  # tokens the grammar was asked about
        self.grammar_rejections = 0  # ... and rejected: sampled again among the allowed
        self.full_samples = 0  # greedy steps the shortlist could not settle: the whole vocabulary
        # the shortlist is exact for greedy decoding only, and only while penalties lower logits
        self._greedy = temperature == 0.0 and repeat_penalty >= 1.0
        self.chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            lc.llama_sampler_chain_add(self.chain, sampler)

        add(lc.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, repeat_penalty, 0.0, 0.0))
        if temperature == 0.0:
            add(lc.llama_sampler_init_greedy())
        else:
            if temperature > 0.0:
                add(lc.llama_sampler_init_top_k(_TOP_K))
                add(lc.llama_sampler_init_typical(_TYPICAL_P, 1))
                add(lc.llama_sampler_init_top_p(_TOP_P if top_p is None else top_p, 1))
                add(lc.llama_sampler_init_min_p(_MIN_P, 1))
                add(lc.llama_sampler_init_temp(temperature))
            add(lc.llama_sampler_init_dist(next_seed() if seed is None else seed))
        self.grammar = None
        if grammar is not None:
            self.grammar = lc.llama_sampler_init_grammar(vocab, grammar, b"root")
            if not self.grammar:
                self.close()
                raise ValueError("llama.cpp could not parse the JSON-schema grammar")
        # the candidates: one array of llama_token_data (id, logit, p) refilled at each step
        dtype = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
        self._ids = np.arange(n_vocab, dtype=np.intc)
        self._data = np.zeros(n_vocab, dtype=dtype)
        self._candidates = lc.llama_token_data_array(
            data=self._data.ctypes.data_as(lc.llama_token_data_p), size=n_vocab, selected=-1, sorted=False
        )
        self._one = (lc.llama_token_data * 1)()
        self._one_array = lc.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)

    def _fill(self, logits: Any) -> Any:
        """Reset the candidates to every token with its raw logit (samplers sort and cut them)."""
        self._data["id"] = self._ids
        self._data["logit"] = logits
        self._data["p"] = 0.0
        self._candidates.size, self._candidates.selected, self._candidates.sorted = self.n_vocab, -1, False
        return ctypes.byref(self._candidates)

    def _chosen(self) -> int:
        selected = self._candidates.selected
        if selected < 0:
            raise RuntimeError("the sampler chain chose no token")
        return int(self._candidates.data[selected].id)

    def sample(self, logits: Any) -> int:
        """The next token for ``logits`` (a float array over the vocabulary; not modified)."""
        lc = self._lc
        shortlist = self._shortlist(logits, SHORTLIST) if self._greedy else None
        token = None if shortlist is None else self._best(shortlist, logits, grammar=False)
        if token is None:
            self.full_samples += 1
            lc.llama_sampler_apply(self.chain, self._fill(logits))
            token = self._chosen()
        if self.grammar is None or self._allowed(token):
            return token
        # rejected: llama.cpp's order for the resample, the grammar's mask, then the chain
        self.grammar_rejections += 1
        for size in _WIDER if shortlist is not None else ():
            if size > SHORTLIST:
                shortlist = self._shortlist(logits, size)
            if shortlist is None:
                break
            if (token := self._best(shortlist, logits, grammar=True)) is not None:
                return token
        self.full_samples += 1
        candidates = self._fill(logits)
        lc.llama_sampler_apply(self.grammar, candidates)
        lc.llama_sampler_apply(self.chain, candidates)
        return self._chosen()

    def _allowed(self, token: int) -> bool:
        """True when the grammar accepts ``token`` next (asked about that token alone)."""
        self.grammar_checks += 1
        self._one[0] = self._lc.llama_token_data(token, 1.0, 0.0)
        self._one_array.size, self._one_array.selected = 1, -1
        self._lc.llama_sampler_apply(self.grammar, ctypes.byref(self._one_array))
        return bool(self._one[0].logit != float("-inf"))

    def _shortlist(self, logits: Any, size: int) -> tuple[Any, float] | None:
        """The ids of the ``size`` highest raw logits and all tied with the lowest of them, in id
        order (greedy keeps the first of equal logits, as over the whole vocabulary), with that
        lowest logit; None when that is the whole vocabulary (or NaNs leave nothing)."""
        np = self._np
        if size >= self.n_vocab:
            return None
        floor = np.partition(logits, -size)[-size]
        ids = np.flatnonzero(logits >= floor)
        return (ids, float(floor)) if 0 < len(ids) < self.n_vocab else None

    def _best(self, shortlist: tuple[Any, float], logits: Any, *, grammar: bool) -> int | None:
        """Greedy's token over the whole vocabulary, found in the shortlist (the grammar's mask
        first when ``grammar``), or None when the shortlist cannot tell: its best penalized
        logit fell below the shortlist's floor, which a token outside it may reach."""
        ids, floor = shortlist
        n = len(ids)
        short = self._data[:n]  # the candidates' first n entries (refilled whole when needed)
        short["id"] = ids
        short["logit"] = logits[ids]
        short["p"] = 0.0
        array = self._candidates
        array.size, array.selected, array.sorted = n, -1, False
        if grammar:
            self._lc.llama_sampler_apply(self.grammar, ctypes.byref(array))
        self._lc.llama_sampler_apply(self.chain, ctypes.byref(array))
        selected = array.selected
        if not 0 <= selected < n or not short["logit"][selected] >= floor:  # -inf: all rejected
            return None
        return int(short["id"][selected])

    def accept(self, token: int) -> None:
        """Keep ``token``: the grammar advances, the penalties remember it."""
        if self.grammar is not None:
            self._lc.llama_sampler_accept(self.grammar, token)
        self._lc.llama_sampler_accept(self.chain, token)

    def close(self) -> None:
        """Free the native samplers (idempotent)."""
        if self.grammar is not None:
            self._lc.llama_sampler_free(self.grammar)
            self.grammar = None
        if self.chain is not None:
            self._lc.llama_sampler_free(self.chain)
            self.chain = None
