"""Greedy sampling over a shortlist (llama_sampling.py) chooses what the whole vocabulary chooses.

Opt-in (marker ``local_llm``): it needs the ``[local]`` extra and FLOCK_TEST_LOCAL_MODEL=1. The
model writes a long, nested answer (an enum, an integer with bounds, a string with a minimum
length), so the grammar refuses the model's first choice often (the opening ``{"`` ranks thousands
of tokens down) and the repeat penalty lowers tokens of the shortlist. At every step the token
:class:`TokenSampler` chooses is compared with the one llama.cpp's own samplers choose over all
152,000 tokens, in the order llama-cpp-python chains them for a chat completion (penalties, the
grammar's mask, greedy), on the same logits."""

from __future__ import annotations

import os
from typing import Any

import pytest

from flock_cli.engines.local import local_model_path

_SCHEMA = {
    "type": "object",
    "properties": {
        "article": {
            "type": "object",
            "properties": {
                "angle": {"type": "string", "enum": ["politics", "economy", "science", "local"]},
                "headline": {"type": "string", "maxLength": 80},
                "body": {"type": "string", "minLength": 40},
                "word_count": {"type": "integer", "minimum": 50, "maximum": 2000},
            },
            "required": ["angle", "headline", "body", "word_count"],
        }
    },
    "required": ["article"],
}
_BRIEFS = [
    "A port strike halts container traffic; cover the economy side for readers in port cities.",
    "A new bridge opens downtown after six years of works; cover the local side, plainly.",
]


def _whole_vocabulary(lc: Any, logits: Any, history: list[int], grammar: Any = None) -> int:
    """llama.cpp's own choice over every token: penalties, the grammar's mask, greedy."""
    import ctypes

    import numpy as np

    n_vocab = len(logits)
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_penalties(n_vocab, 64, 1.1, 0.0, 0.0))
    if grammar is not None:
        lc.llama_sampler_chain_add(chain, grammar)
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
    try:
        for token in history:
            lc.llama_sampler_accept(chain, token)
        data = np.zeros(
            n_vocab, dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
        )
        data["id"], data["logit"] = np.arange(n_vocab), logits
        candidates = lc.llama_token_data_array(
            data=data.ctypes.data_as(lc.llama_token_data_p), size=n_vocab, selected=-1, sorted=False
        )
        lc.llama_sampler_apply(chain, ctypes.byref(candidates))
        return int(data["id"][candidates.selected])
    finally:
        lc.llama_sampler_free(chain)


def test_the_shortlist_never_hides_a_better_token_beyond_it() -> None:
    """Without a model: logits with many ties and a penalized top, where the best token after
    the repeat penalty lies beyond the shortlist, and ties are broken by token id."""
    lc = pytest.importorskip("llama_cpp")
    import numpy as np

    from flock_cli.engines.llama_sampling import SHORTLIST, TokenSampler

    rng = np.random.default_rng(7)
    n_vocab = 3000
    for trial in range(300):
        logits = (np.round(rng.normal(0.0, 3.0, n_vocab) * 2) / 2).astype(np.float32)  # many ties
        top = np.argsort(-logits, kind="stable")[: SHORTLIST + 10]
        history = [int(t) for t in rng.choice(top, size=rng.integers(0, 64), replace=True)]
        if trial % 3 == 0:  # the whole shortlist was said before: the best token is beyond it
            logits = np.minimum(logits, 9.0)
            logits[top[:SHORTLIST]], logits[top[SHORTLIST]] = 10.0, 9.5  # 10 / 1.1 < 9.5
            history = [int(t) for t in top[:SHORTLIST]]
        if trial % 5 == 0:
            logits[rng.integers(0, n_vocab, 40)] = -np.inf
        sampler = TokenSampler(
            None, n_vocab, None, temperature=0.0, top_p=None, seed=None, repeat_penalty=1.1
        )
        try:
            for token in history:
                sampler.accept(token)
            assert sampler.sample(logits) == _whole_vocabulary(lc, logits, history), trial
        finally:
            sampler.close()


@pytest.mark.local_llm
@pytest.mark.skipif(
    os.environ.get("FLOCK_TEST_LOCAL_MODEL") != "1", reason="opt-in: FLOCK_TEST_LOCAL_MODEL=1"
)
def test_greedy_choices_are_the_whole_vocabularys_at_every_step() -> None:
    pytest.importorskip("llama_cpp")
    import ctypes

    import llama_cpp as lc
    import numpy as np
    from llama_cpp import Llama

    from flock_cli.engines.llama_sampling import PENALTY_LAST_N, TokenSampler, grammar_for

    llama: Any = Llama(model_path=str(local_model_path("local")), n_ctx=1024, n_batch=512, verbose=False)
    vocab, n_vocab = llama._model.vocab, llama.n_vocab()
    grammar = grammar_for({"type": "json_object", "schema": _SCHEMA})
    assert grammar is not None
    rejected = 0
    data = np.zeros(
        n_vocab, dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
    )
    for brief in _BRIEFS:
        prompt = (
            "<|im_start|>system\nYou are a journalist. Answer with one JSON object.<|im_end|>\n"
            f"<|im_start|>user\n{brief}<|im_end|>\n<|im_start|>assistant\n"
        )
        llama.reset()
        llama.eval(llama.tokenize(prompt.encode(), add_bos=False, special=True))
        ours = TokenSampler(
            vocab, n_vocab, grammar, temperature=0.0, top_p=None, seed=None, repeat_penalty=1.1
        )
        whole = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        lc.llama_sampler_chain_add(
            whole, lc.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, 1.1, 0.0, 0.0)
        )
        lc.llama_sampler_chain_add(whole, lc.llama_sampler_init_grammar(vocab, grammar, b"root"))
        lc.llama_sampler_chain_add(whole, lc.llama_sampler_init_greedy())
        try:
            for _ in range(120):
                logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(n_vocab,)).copy()
                token = ours.sample(logits)
                data["id"], data["logit"], data["p"] = np.arange(n_vocab), logits, 0.0
                candidates = lc.llama_token_data_array(
                    data=data.ctypes.data_as(lc.llama_token_data_p), size=n_vocab, selected=-1, sorted=False
                )
                lc.llama_sampler_apply(whole, ctypes.byref(candidates))
                assert token == data["id"][candidates.selected]
                if lc.llama_vocab_is_eog(vocab, token):
                    break
                ours.accept(token)
                lc.llama_sampler_accept(whole, token)
                llama.eval([token])
            rejected += ours.grammar_rejections
        finally:
            ours.close()
            lc.llama_sampler_free(whole)
    assert rejected >= 4  # the shortlists were put to the test, not only the first choice
