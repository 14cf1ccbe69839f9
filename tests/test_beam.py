"""Specification of minillm.beam: the batched beam search equals the single-question reference
(beam_search_one) on random models, questions, widths, length penalties and lengths, with and without the KV
cache; both find the brute-force optimum when the beam is as wide as the vocabulary; width 1 is greedy."""
import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minillm.batching import pad
from minillm.beam import beam_search, beam_search_one
from minillm.decoding import GenerationConfig
from minillm.generation import decode_ids
from test_generation import NEG_INF, SOURCES, random_model, with_   # random_model: see its docstring


@given(seed=st.integers(0, 10_000), vocab_size=st.integers(5, 12), K=st.integers(1, 4),
       alpha=st.sampled_from([-1.0, 0.0, 0.6, 1.0, 2.5]), max_new=st.integers(1, 6),
       eos_boost=st.sampled_from([1.0, 2.0, 3.0]), repetition_penalty=st.sampled_from([1.0, 1.5]),
       use_cache=st.booleans(), data=st.data())
def test_batched_beam_search_equals_the_reference(seed, vocab_size, K, alpha, max_new, eos_boost,
                                                  repetition_penalty, use_cache, data):
    model = random_model(seed, vocab_size=vocab_size, eos_boost=eos_boost, std=0.6)
    word = st.integers(3, vocab_size - 1)                 # any token but <pad>, <bos>, <eos>
    questions = data.draw(st.lists(st.lists(word, min_size=1, max_size=6), min_size=1, max_size=3))
    config = GenerationConfig(strategy="beam", num_beams=K, length_penalty=alpha, max_new_tokens=max_new,
                              repetition_penalty=repetition_penalty, use_cache=use_cache)
    with torch.inference_mode():
        batched = beam_search(model, pad(questions, model.cfg.pad_id), config)
    for question, got in zip(questions, batched):
        want = beam_search_one(model, question, config)
        assert (got.ids, got.finished) == (want.ids, want.finished)
        assert got.score == pytest.approx(want.score, rel=1e-4, abs=1e-4)


def test_the_reference_finishes_and_stops_by_hand(tiny_model):
    # Width 2 and a model that puts almost all probability on <eos>. Step 0 finishes the empty answer (rank 0 <
    # K) and keeps two one-word beams (sum ~ -30); step 1 finishes both of them with score ~ -30, so there are
    # K hypotheses, and with alpha = 0 no running beam (sum ~ -60) can beat them: the search stops after two
    # steps, three forward passes (1 beam, then 2), long before max_new_tokens = 20.
    model = tiny_model(tie_embeddings=False).eval()       # a head of its own, to hook
    eos_first = torch.zeros(model.cfg.vocab_size)
    eos_first[model.cfg.eos_id] = 30.0                    # <eos> logit + 30: probability ~1 at every step
    calls = []

    def push_eos(module, inputs, logits):
        calls.append(logits.shape)
        return logits + eos_first

    model.head.register_forward_hook(push_eos)
    config = GenerationConfig(strategy="beam", num_beams=2, length_penalty=0.0, max_new_tokens=20)
    best = beam_search_one(model, [3, 4], config)
    assert best.ids == [] and best.finished
    assert len(calls) == 3
    with torch.inference_mode():
        assert beam_search(model, pad([[3, 4]], 0), config)[0].ids == []
    # ignore_eos: never finished, always max_new_tokens long, in both.
    long = beam_search_one(model, [3, 4], with_(config, ignore_eos=True, max_new_tokens=5))
    assert len(long.ids) == 5 and not long.finished
    assert decode_ids(model, [[3, 4]], with_(config, ignore_eos=True, max_new_tokens=5)) == [(long.ids, False)]


@pytest.mark.parametrize("seed", [0, 7])
def test_beam_width_1_is_greedy(seed):
    # With length_penalty 0 a width-1 beam keeps the single best extension, and an <eos> only when it is that
    # best extension: exactly greedy decoding.
    model = random_model(seed, eos_boost=2.0)
    with torch.inference_mode():
        beam = decode_ids(model, SOURCES, GenerationConfig(strategy="beam", num_beams=1, length_penalty=0.0,
                                                           max_new_tokens=12))
        greedy = decode_ids(model, SOURCES, GenerationConfig(strategy="greedy", max_new_tokens=12))
    assert beam == greedy


@torch.inference_mode()
def brute_force_best(model, src: list[int], max_new: int, alpha: float) -> list[int]:
    """Score EVERY possible answer of at most max_new tokens and return the best.

    Score definition (the one beam search uses): sum over the answer's tokens, and the final <eos> when there
    is one, of log softmax(logits with <pad>/<bos> removed), divided by length**alpha, where length counts the
    answer tokens plus the <eos>. Answers cut off at max_new tokens have no <eos>."""
    cfg = model.cfg
    words = [v for v in range(cfg.vocab_size) if v not in (cfg.pad_id, cfg.bos_id, cfg.eos_id)]

    def log_probs(prefix):
        logits = model(torch.tensor([src]), torch.tensor([[cfg.bos_id] + prefix]))[0, -1]
        logits[[cfg.pad_id, cfg.bos_id]] = NEG_INF
        return logits.log_softmax(-1)

    best, best_score = None, NEG_INF
    for n in range(max_new + 1):
        for prefix in itertools.product(words, repeat=n):
            prefix = list(prefix)
            total = sum(float(log_probs(prefix[:i])[tok]) for i, tok in enumerate(prefix))
            if n < max_new:
                total += float(log_probs(prefix)[cfg.eos_id])
                length = n + 1
            else:
                length = n
            if length == 0:
                continue
            score = total / length ** alpha
            if score > best_score:
                best, best_score = prefix, score
    return best


@pytest.mark.parametrize("seed,alpha,max_new", [(0, 0.0, 3), (1, 1.0, 3), (2, 0.0, 2), (3, 2.0, 3), (4, -1.0, 3)])
def test_beam_search_as_wide_as_the_vocabulary_finds_the_brute_force_best(seed, alpha, max_new):
    # V = 5: <pad>, <bos> (never generated), <eos> and two words. With K = V beams every partial answer of up
    # to 2 tokens (2**2 = 4 <= K) stays in the beam, so every answer of up to 3 tokens is scored: beam search
    # must return the exhaustive optimum.
    model = random_model(seed, vocab_size=5, std=1.0)
    config = GenerationConfig(strategy="beam", num_beams=5, length_penalty=alpha, max_new_tokens=max_new)
    sources = [[3, 4, 3], [4], [4, 4, 3, 3, 4]]
    with torch.inference_mode():
        beam = decode_ids(model, sources, config)
    best = [brute_force_best(model, s, max_new, alpha) for s in sources]
    assert [ids for ids, _ in beam] == best
    assert [beam_search_one(model, s, config).ids for s in sources] == best     # the reference too


def test_beam_cache_reorder_matches_uncached_beam():
    model = random_model(8)
    config = GenerationConfig(strategy="beam", num_beams=4, max_new_tokens=10)
    with torch.inference_mode():
        assert decode_ids(model, SOURCES, config) == decode_ids(model, SOURCES, with_(config, use_cache=False))


