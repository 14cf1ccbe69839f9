"""Specification of minillm.decoding, minillm.beam and minillm.generation: the logits processors against naive
references, and the decoding strategies against the slow way (no cache), against each other, and against
brute-force enumeration. tests/test_beam.py checks the batched beam search against the single-question one."""
import dataclasses
import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from minillm.decoding import (BOUNDS, GenerationConfig, apply_repetition_penalty, apply_temperature, check_finite,
                              no_repeat_ngram_filter, top_k_filter, top_p_filter)
from minillm.generation import Answer, decode_ids, generate
from minillm.model import ModelConfig, Seq2Seq

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------------------------------------
# Logits processors
# ----------------------------------------------------------------------------------------------------------

@st.composite
def logit_rows(draw, max_rows=4, max_vocab=12):
    """(B, V) float64 logits, often with ties (values drawn from a small grid half of the time)."""
    B = draw(st.integers(1, max_rows))
    V = draw(st.integers(1, max_vocab))
    values = st.one_of(st.sampled_from([-2.0, 0.0, 0.5, 1.0, 3.0]),
                       st.floats(-8.0, 8.0, allow_nan=False, allow_infinity=False))
    rows = draw(st.lists(st.lists(values, min_size=V, max_size=V), min_size=B, max_size=B))
    return torch.tensor(rows, dtype=torch.float64)


def reference_top_k(row: list[float], k: int) -> list[bool]:
    """Keep every logit >= the k-th largest (ties at the boundary all kept)."""
    if k == 0 or k >= len(row):
        return [True] * len(row)
    kth = sorted(row, reverse=True)[k - 1]
    return [x >= kth for x in row]


def reference_top_p(row: list[float], p: float) -> tuple[list[bool], list[float]]:
    """Holtzman et al. 2020, written the slow way: add up probabilities from the most likely token down until
    the sum reaches p; keep those tokens (and any tied with the last one). Also returns the cumulative sums,
    so the test can skip draws where rounding could decide the boundary."""
    m = max(row)
    exps = [math.exp(x - m) for x in row]
    total = sum(exps)
    probs = [e / total for e in exps]
    order = sorted(range(len(row)), key=lambda i: -row[i])
    cum, sums, threshold = 0.0, [], None
    for i in order:
        cum += probs[i]
        sums.append(cum)
        if threshold is None and cum >= p:
            threshold = row[i]
    if threshold is None:          # only rounding keeps the total below p
        threshold = row[order[-1]]
    return [x >= threshold for x in row], sums


def check_filtered_distribution(original: torch.Tensor, filtered: torch.Tensor) -> None:
    """A filter removes tokens (-inf) but never changes the rest; softmax renormalises over the kept tokens;
    the most likely token always stays."""
    kept = torch.isfinite(filtered)
    assert torch.equal(filtered[kept], original[kept])
    assert kept.gather(1, original.argmax(dim=1, keepdim=True)).all()
    probs = filtered.softmax(dim=1)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(probs), dtype=probs.dtype))
    p_orig = original.softmax(dim=1)
    renormalised = torch.where(kept, p_orig / (p_orig * kept).sum(dim=1, keepdim=True), torch.zeros_like(p_orig))
    torch.testing.assert_close(probs, renormalised)


@given(logit_rows(), st.integers(0, 14))
def test_top_k_matches_reference(logits, k):
    filtered = top_k_filter(logits, k)
    expected = torch.tensor([reference_top_k(row, k) for row in logits.tolist()])
    assert torch.equal(torch.isfinite(filtered), expected)
    check_filtered_distribution(logits, filtered)
    # Row by row: each row of the batch is filtered exactly as it would be alone.
    for i in range(len(logits)):
        assert torch.equal(top_k_filter(logits[i:i + 1], k), filtered[i:i + 1])


@given(logit_rows(), st.floats(0.01, 1.0))
def test_top_p_matches_reference(logits, p):
    filtered = top_p_filter(logits, p)
    expected, sums = zip(*(reference_top_p(row, p) for row in logits.tolist()))
    # subtle: where a cumulative sum lies within rounding of p, float64 sums in a different order could
    # legitimately stop one token earlier or later; such draws decide nothing about the algorithm.
    assume(all(abs(s - p) > 1e-9 for row_sums in sums for s in row_sums) or p == 1.0)
    assert torch.equal(torch.isfinite(filtered), torch.tensor(expected))
    check_filtered_distribution(logits, filtered)
    for i in range(len(logits)):
        assert torch.equal(top_p_filter(logits[i:i + 1], p), filtered[i:i + 1])


def test_top_p_by_hand():
    # probabilities 0.5, 0.3, 0.15, 0.05 (in a shuffled order): p = 0.8 keeps 0.5 + 0.3 exactly (reaches p),
    # p = 0.81 needs the 0.15 too, and a tiny p still keeps the most likely token.
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]], dtype=torch.float64)
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.79)).tolist() == [[False, True, False, True]]
    assert torch.isfinite(top_p_filter(logits, 0.81)).tolist() == [[True, True, False, True]]
    assert torch.isfinite(top_p_filter(logits, 1e-6)).tolist() == [[False, True, False, False]]
    # Per row in a batch: the second row's nucleus is its own, not the first row's (a cut-off computed on
    # sorted rows must not leak across rows).
    batch = torch.cat([logits, logits.flip(1)])
    assert torch.isfinite(top_p_filter(batch, 0.79)).tolist() == [[False, True, False, True],
                                                                    [True, False, True, False]]


def test_top_k_by_hand():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0], [5.0, 5.0, 0.0, 1.0]])
    assert torch.isfinite(top_k_filter(logits, 2)).tolist() == [[False, True, False, True],
                                                                 [True, True, False, False]]
    assert torch.isfinite(top_k_filter(logits, 1)).tolist() == [[False, True, False, False],
                                                                 [True, True, False, False]]  # a tie: both kept


def test_temperature_zero_is_rejected_with_a_pointer_to_greedy():
    with pytest.raises(ValueError, match="greedy"):
        GenerationConfig(strategy="sample", temperature=0.0)
    with pytest.raises(ValueError, match="greedy"):
        apply_temperature(torch.zeros(1, 3), 0)
    logits = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(apply_temperature(logits, 0.5), torch.tensor([[2.0, 4.0]]))


def test_repetition_penalty_by_hand():
    # Keskar et al. 2019: seen tokens 0 and 1 (1 twice): positive logit divided, negative multiplied, once.
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]


@given(logit_rows(), st.data(), st.floats(0.5, 3.0))
def test_repetition_penalty_matches_reference(logits, data, penalty):
    B, V = logits.shape
    prev = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, V - 1), min_size=3, max_size=3),
                                           min_size=B, max_size=B)))
    out = apply_repetition_penalty(logits, prev, penalty)
    for b in range(B):
        for v in range(V):
            x = logits[b, v].item()
            want = (x / penalty if x > 0 else x * penalty) if v in prev[b].tolist() else x
            assert out[b, v].item() == pytest.approx(want)


@given(st.integers(1, 4), st.data())
def test_no_repeat_ngram_matches_reference(n, data):
    V = 5
    B = data.draw(st.integers(1, 3))
    T = data.draw(st.integers(1, 9))
    prev = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, V - 1), min_size=T, max_size=T),
                                           min_size=B, max_size=B)))
    out = no_repeat_ngram_filter(torch.zeros(B, V), prev, n)
    for b, seq in enumerate(prev.tolist()):
        # Naive: token x is banned iff seq + [x] ends with an n-gram that already occurs in seq.
        banned = {seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i:i + n - 1] == seq[len(seq) - n + 1:]}
        assert [math.isinf(x) for x in out[b].tolist()] == [v in banned for v in range(V)]


def test_non_finite_logits_raise_a_clear_error():
    with pytest.raises(FloatingPointError, match=r"non-finite logits .* step 3 .* rows \[1\]"):
        check_finite(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), 3)


# ----------------------------------------------------------------------------------------------------------
# Strategies on tiny random models
# ----------------------------------------------------------------------------------------------------------

def random_model(seed: int, vocab_size: int = 40, eos_boost: float = 1.0, std: float = 0.3) -> Seq2Seq:
    """A random model whose answers vary, for comparing decoding strategies (tests/test_beam.py uses it too).

    Unlike the conftest `tiny_model` fixture: an untied head and weights ~ N(0, std) (the default init with
    tied embeddings tends to repeat one token), a vocabulary of `vocab_size` ids (small enough for brute force),
    and eos_boost, which scales the <eos> row of the head: > 1 ends answers sooner."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab_size, d_model=32, n_heads=2, n_encoder_layers=1, n_decoder_layers=2,
                      d_ff=64, dropout=0.0, max_len=64, tie_embeddings=False)
    model = Seq2Seq(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
        model.head.weight[cfg.eos_id] *= eos_boost
    return model


SOURCES = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16, 17], [20, 21, 22], [30, 3]]


def with_(config: GenerationConfig, **changes) -> GenerationConfig:
    return dataclasses.replace(config, **changes)


@torch.inference_mode()
def uncached_greedy(model, src: list[int], max_new: int) -> list[int]:
    """Greedy decoding the slowest, plainest way, independent of minillm.generation: full forward pass on
    the whole prefix every step, argmax over every token except <pad>/<bos>, stop at <eos>."""
    cfg = model.cfg
    tokens = [cfg.bos_id]
    for _ in range(max_new):
        logits = model(torch.tensor([src]), torch.tensor([tokens]))[0, -1]   # (V,)
        logits[[cfg.pad_id, cfg.bos_id]] = NEG_INF
        nxt = int(logits.argmax())
        if nxt == cfg.eos_id:
            break
        tokens.append(nxt)
    return tokens[1:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_greedy_equals_uncached_greedy(seed):
    model = random_model(seed, eos_boost=2.0)
    config = GenerationConfig(strategy="greedy", max_new_tokens=12)
    with torch.inference_mode():
        cached = decode_ids(model, SOURCES, config)
        reference_path = decode_ids(model, SOURCES, with_(config, use_cache=False))
    naive = [uncached_greedy(model, s, 12) for s in SOURCES]
    assert [ids for ids, _ in cached] == naive
    assert cached == reference_path
    assert len({len(ids) for ids in naive}) > 1          # the rows really stop at different lengths


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
@pytest.mark.parametrize("seed", [3, 4])
def test_batched_equals_one_by_one(strategy, seed):
    model = random_model(seed, eos_boost=2.0)
    config = GenerationConfig(strategy=strategy, max_new_tokens=10, num_beams=3, repetition_penalty=1.3,
                            no_repeat_ngram_size=3)
    with torch.inference_mode():
        batched = decode_ids(model, SOURCES, config)
        alone = [decode_ids(model, [s], config)[0] for s in SOURCES]
        uncached = decode_ids(model, SOURCES, with_(config, use_cache=False))
    assert batched == alone
    assert batched == uncached


class DecodeStepSpy:
    """Records the batch size of every decode_step call of a model."""

    def __init__(self, model):
        self.sizes, self._inner = [], model.decode_step
        model.decode_step = self

    def __call__(self, tgt_ids, cache, **kw):
        self.sizes.append(tgt_ids.size(0))
        return self._inner(tgt_ids, cache, **kw)


def test_eos_stops_each_sequence_and_finished_rows_leave_the_batch():
    model = random_model(2, eos_boost=2.0)
    spy = DecodeStepSpy(model)
    config = GenerationConfig(strategy="greedy", max_new_tokens=12)
    with torch.inference_mode():
        results = decode_ids(model, SOURCES, config)
        eos = model.cfg.eos_id
        for src, (ids, finished) in zip(SOURCES, results):
            assert eos not in ids
            # The row stopped exactly where the model's argmax was <eos>, or ran into max_new_tokens.
            logits = model(torch.tensor([src]), torch.tensor([[model.cfg.bos_id] + ids]))[0, -1]
            logits[[model.cfg.pad_id, model.cfg.bos_id]] = NEG_INF
            assert finished == (int(logits.argmax()) == eos)
            assert finished or len(ids) == 12
    lengths = [len(ids) + finished for ids, finished in results]     # decoding steps each row took
    # One decode_step per step, over exactly the rows still running at that step.
    assert spy.sizes == [sum(n > t for n in lengths) for t in range(max(lengths))]
    assert spy.sizes[-1] < len(SOURCES)
    # With eos ignored every row runs the full length.
    with torch.inference_mode():
        full = decode_ids(model, SOURCES, with_(config, ignore_eos=True))
    assert all(len(ids) == 12 and not finished for ids, finished in full)


def test_seeded_sampling_is_reproducible():
    model = random_model(5)
    config = GenerationConfig(strategy="sample", max_new_tokens=10, temperature=1.5, top_k=10, top_p=0.9, seed=7)
    with torch.inference_mode():
        a = decode_ids(model, SOURCES, config)
        b = decode_ids(model, SOURCES, config)
        c = decode_ids(model, SOURCES, with_(config, seed=8))
        greedy = decode_ids(model, SOURCES, GenerationConfig(max_new_tokens=10))
    assert a == b
    assert a != c and a != greedy                         # the seed and the sampling really matter
    # Sampling uses its own generator: the global RNG (dropout, shuffling in training) does not move,
    # with a seed or without one.
    state = torch.get_rng_state()
    with torch.inference_mode():
        decode_ids(model, SOURCES, config)
        decode_ids(model, SOURCES, with_(config, seed=None))
    assert torch.equal(torch.get_rng_state(), state)


def test_sampling_with_top_k_1_is_greedy():
    model = random_model(6, eos_boost=2.0)
    with torch.inference_mode():
        sampled = decode_ids(model, SOURCES, GenerationConfig(strategy="sample", top_k=1, max_new_tokens=10, seed=0))
        greedy = decode_ids(model, SOURCES, GenerationConfig(strategy="greedy", max_new_tokens=10))
    assert sampled == greedy


def edges(setting):
    """The extreme values a numeric setting allows (a hair inside an exclusive bound); an open high is skipped."""
    low = setting.low if setting.low_inclusive else setting.low + 1e-3
    return [low] + ([setting.high] if setting.high is not None and setting.high < 1e6 else [])


EDGE_CASES = [(strategy, name, value) for name, setting in BOUNDS.items() if setting.kind != "choice"
              and name not in ("max_new_tokens", "top_k", "num_beams", "seed")
              for value in edges(setting) for strategy in ("sample", "beam")]


@pytest.mark.parametrize("strategy,name,value", EDGE_CASES)
def test_every_value_the_table_allows_decodes(strategy, name, value):
    """Every setting at the ends of its range in decoding.BOUNDS (temperature 0.01, repetition penalty 0.1 or
    10, ...) decodes to valid answer tokens: no inf/NaN logits, no crash. (Beyond the bounds that fails:
    temperature 1e-40 turns logits into inf, and repetition penalty 1e-40 sends beam search out of range.)"""
    model = random_model(11, eos_boost=2.0)
    config = GenerationConfig(strategy=strategy, max_new_tokens=8, num_beams=3, seed=0, **{name: value})
    with torch.inference_mode():
        results = decode_ids(model, SOURCES, config)
    assert len(results) == len(SOURCES)
    special = {model.cfg.pad_id, model.cfg.bos_id, model.cfg.eos_id}
    for ids, finished in results:
        assert all(0 <= i < model.cfg.vocab_size and i not in special for i in ids)
        assert finished or len(ids) == 8


def test_nan_weights_give_a_clear_error_not_a_sample(tiny_model):
    model = tiny_model(tie_embeddings=False).eval()
    with torch.no_grad():
        model.head.weight[7, 0] = float("nan")           # one output row: logits of token 7 are NaN
    for strategy in ("greedy", "sample", "beam"):
        with pytest.raises(FloatingPointError, match="non-finite logits"):
            with torch.inference_mode():
                decode_ids(model, SOURCES[:2], GenerationConfig(strategy=strategy, seed=0, max_new_tokens=8))


# ----------------------------------------------------------------------------------------------------------
# generate(): text in, Answers out
# ----------------------------------------------------------------------------------------------------------

def test_generate_answers_in_order_with_details(tiny_tokenizer):
    tokenizer = tiny_tokenizer
    model = random_model(9, vocab_size=tokenizer.vocab_size, eos_boost=1.5)
    model.train()                                         # generate() switches to eval and back
    questions = ["Kanun nedir?", "Mahkemeler bağımsız mıdır?", "Kira"]
    config = GenerationConfig(max_new_tokens=8, repetition_penalty=1.2)
    answers = generate(model, tokenizer, questions, config, return_details=True, batch_size=2)
    assert model.training
    L, H = model.cfg.n_decoder_layers, model.cfg.n_heads
    with torch.inference_mode():
        model.eval()
        alone = [generate(model, tokenizer, [q], config)[0] for q in questions]
    for q, a, b in zip(questions, answers, alone):
        assert isinstance(a, Answer)
        assert a.ids == b.ids and a.text == tokenizer.decode(a.ids)
        src_ids = tokenizer.encode(q) + [tokenizer.eos_id]          # the encoder input, as in training
        S, T = len(src_ids), len(a.ids)
        assert a.cross_attention.shape == (L, H, T, S)
        # Each attention row is a distribution over the question's real tokens.
        torch.testing.assert_close(a.cross_attention.sum(-1), torch.ones(L, H, T))
        # Self-attention: row t (the step that wrote ids[t]) over <bos>, ids[0..t-1]; nothing later.
        assert a.self_attention.shape == (L, H, T, T)
        assert torch.equal(a.self_attention.triu(diagonal=1), torch.zeros(L, H, T, T))
        torch.testing.assert_close(a.self_attention.sum(-1), torch.ones(L, H, T))
        assert len(a.steps) == T
        assert len(a.token_probs) == T and all(0.0 < p <= 1.0 for p in a.token_probs)
        assert a.src_tokens == [tokenizer.id_to_token_str(i) for i in src_ids]
        assert len(a.tgt_tokens) == T
    # The recorded probability is the one greedy chose by: the largest after the processors.
    a = answers[0]
    assert len(a.ids) > 0                                 # so the check below compares something
    with torch.inference_mode():
        src = torch.tensor([tokenizer.encode(questions[0]) + [tokenizer.eos_id]])
        tgt = torch.tensor([[model.cfg.bos_id] + a.ids])
        logits = model(src, tgt)[0, :-1]                 # (T, V)
    for t, tok in enumerate(a.ids):
        row = logits[t:t + 1].clone()
        row[:, [0, 1]] = NEG_INF
        row = apply_repetition_penalty(row, tgt[:, :t + 1], 1.2)
        assert a.token_probs[t] == pytest.approx(float(row.softmax(-1)[0, tok]), rel=1e-4)


def test_generate_rejects_bad_input(tiny_tokenizer, tiny_model):
    model, tokenizer = tiny_model(), tiny_tokenizer
    with pytest.raises(TypeError, match="list of str"):
        generate(model, tokenizer, "tek soru")
    with pytest.raises(ValueError, match="non-empty"):
        generate(model, tokenizer, ["soru", "  "])
    assert model.cfg.max_len == 32
    with pytest.raises(ValueError, match="max_len = 32"):
        generate(model, tokenizer, ["soru"], GenerationConfig(max_new_tokens=33))
    for bad in (dict(strategy="nucleus"), dict(top_p=0.0), dict(top_k=-1), dict(num_beams=0),
                dict(max_new_tokens=0), dict(repetition_penalty=0.0)):
        with pytest.raises(ValueError, match="GenerationConfig"):
            GenerationConfig(**bad)


def test_question_is_cleaned_as_training_cleans_it(tiny_tokenizer, tiny_model, monkeypatch):
    """The contract: the question is cleaned and encoded exactly as training encodes it (data.encode_source,
    called by batching.Seq2SeqDataset), cut at the model's max_src_len."""
    import unicodedata

    import minillm.generation as generation
    from minillm.batching import Seq2SeqDataset
    from minillm.data import clean_pairs
    typed = ["  İşletme   nedir?", unicodedata.normalize("NFD", "Türkiye Cumhuriyeti laik midir?"),
             "İşletme nedir?".lower(), "Kira\tsözleşmesi\nnedir?", "Kanun önünde herkes eşittir. " * 6]
    cleaned, _ = clean_pairs([(q, "cevap") for q in typed])
    assert len(cleaned) == len(typed)                                     # none dropped as a duplicate
    tokenizer = tiny_tokenizer
    model = tiny_model(max_src_len=12)                                  # trained on 12 source positions
    trained = Seq2SeqDataset(cleaned, tokenizer, max_src_len=12, max_tgt_len=8)
    assert trained.n_src_truncated >= 1                                   # the long question really is cut
    seen = []                                                             # what generate feeds the encoder

    def spy(model, src_ids, config):
        seen.extend(src_ids)
        return [([], True) for _ in src_ids]

    monkeypatch.setattr(generation, "decode_ids", spy)
    for q, (src, _, _) in zip(typed, trained.items):
        seen.clear()
        answer = generation.generate(model, tokenizer, [q])[0]
        assert seen == [src]
        assert answer.src_tokens == [tokenizer.id_to_token_str(i) for i in src]
    # and the raw text really would have given other ids (NFD splits letters, "i̇" carries its dot)
    assert tokenizer.encode(typed[1]) != tokenizer.encode(cleaned[1][0])
    assert tokenizer.encode(typed[2]) != tokenizer.encode(cleaned[2][0])


@pytest.mark.parametrize("config", [
    GenerationConfig(strategy="sample", top_k=2, temperature=1.5, seed=4, max_new_tokens=8),
    GenerationConfig(strategy="sample", top_p=0.5, repetition_penalty=1.5, seed=1, max_new_tokens=8),
    GenerationConfig(strategy="greedy", no_repeat_ngram_size=2, max_new_tokens=8),
    GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=6),
])
def test_steps_show_the_candidates_before_and_after_the_processors(tiny_tokenizer, config):
    tokenizer = tiny_tokenizer
    model = random_model(5, vocab_size=tokenizer.vocab_size, eos_boost=0.5)
    question = "Kanun nedir?"
    a = generate(model, tokenizer, [question], config, return_details=True)[0]
    assert len(a.ids) > 0 and len(a.steps) == len(a.ids) and len(a.token_probs) == len(a.ids)
    with torch.inference_mode():                                      # an independent forward pass, no cache
        src = torch.tensor([tokenizer.encode(question) + [tokenizer.eos_id]])
        tgt = torch.tensor([[model.cfg.bos_id] + a.ids])
        raw = model(src, tgt)[0, :-1].softmax(-1)                     # (T, V) the model's own distribution
    p_top, id_top = raw.topk(5, dim=-1)                               # (T, 5)
    for t, (step, tok) in enumerate(zip(a.steps, a.ids)):
        assert [i for i, _ in step["raw"]] == id_top[t].tolist()
        assert [p for _, p in step["raw"]] == pytest.approx(p_top[t].tolist(), abs=1e-5)
        processed = step["processed"]
        probs = [p for _, p in processed]
        assert 1 <= len(processed) <= 5 and all(p > 0 for p in probs) and probs == sorted(probs, reverse=True)
        if config.top_k == 2:                                         # top-k keeps at most 2 (no ties here)
            assert len(processed) <= 2 and sum(probs) == pytest.approx(1.0, abs=1e-5)
        if config.strategy != "beam":                                 # greedy and sampling drew from `processed`
            assert a.token_probs[t] > 0
        if tok in dict(processed):                                    # the same distribution as token_probs
            assert dict(processed)[tok] == pytest.approx(a.token_probs[t], abs=1e-6)
        if config.strategy == "greedy":                               # greedy took the best processed one
            assert tok == processed[0][0]
