"""Specification of minillm.metrics: token metrics over real tokens, set-level perplexity, sacreBLEU scores."""
import math

import pytest
import sacrebleu
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from minillm.metrics import TokenMetrics, text_scores, topk_correct


def token_accuracy(logits, target, pad_id=0):
    """Accuracy of one batch through TokenMetrics (the only accuracy API)."""
    m = TokenMetrics(pad_id=pad_id, ks=(1,))
    m.update(logits, target)
    return m.accuracy


def topk_accuracy(logits, target, k, pad_id=0):
    correct, n = topk_correct(logits, target, k, pad_id)
    return correct / n


def test_accuracy_hand_computed_ignores_padding():
    # Position 0: argmax 2 (target 2, hit); position 1: argmax 0, target 1 is 2nd best (top-2 hit only);
    # position 2: padding with a "correct" argmax that must not count.
    logits = torch.tensor([[[0.0, 1.0, 5.0], [3.0, 2.0, 1.0], [9.0, 0.0, 0.0]]])
    target = torch.tensor([[2, 1, 0]])
    assert topk_correct(logits, target, 1) == (1, 2)
    assert token_accuracy(logits, target) == 0.5
    assert topk_accuracy(logits, target, 2) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        topk_accuracy(logits, target, 4)


def test_perplexity_hand_computed_and_not_a_mean_of_batches():
    # Batch 1: one token with p = 1/2 (NLL log 2). Batch 2: three tokens with p = 1/8 (NLL log 8 each).
    # Set-level: exp((log 2 + 3 log 8) / 4) = exp(10/4 log 2) = 2^2.5. Mean of per-batch: (2 + 8) / 2 = 5.
    b1 = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]))          # second position is padding
    t1 = torch.tensor([[1, 0]])
    b2 = torch.log(torch.full((1, 3, 8), 1 / 8))
    t2 = torch.tensor([[3, 4, 5]])
    acc = TokenMetrics(pad_id=0, ks=(1,))
    acc.update(b1, t1)
    acc.update(b2, t2)
    assert acc.n_tokens == 4
    assert acc.perplexity == pytest.approx(2 ** 2.5, rel=1e-6)
    per_batch = []
    for lo, t in ((b1, t1), (b2, t2)):
        one = TokenMetrics(pad_id=0, ks=(1,))
        one.update(lo, t)
        per_batch.append(one.perplexity)
    assert per_batch == pytest.approx([2.0, 8.0], rel=1e-6)
    assert sum(per_batch) / 2 == pytest.approx(5.0) and acc.perplexity != pytest.approx(5.0, rel=1e-3)
    # ... and it equals the perplexity of the same tokens seen as ONE batch (padded to a common length).
    both = torch.cat([F.pad(b1, (6, 0, 0, 1), value=math.log(1e-30)), b2])  # (2, 3, 8), p still 1/2 at class 7
    t_both = torch.tensor([[7, 0, 0], [3, 4, 5]])
    joint = TokenMetrics(pad_id=0, ks=(1,))
    joint.update(both, t_both)
    assert joint.perplexity == pytest.approx(acc.perplexity, rel=1e-5)


def test_empty_accumulator_is_an_error_not_a_number():
    with pytest.raises(ValueError, match="no real tokens"):
        TokenMetrics().perplexity


def _random_set(seed, n_seqs, V):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 6, (n_seqs,), generator=g).tolist()
    logits = [torch.randn(L, V, generator=g) * 3 for L in lengths]
    targets = [torch.randint(1, V, (L,), generator=g) for L in lengths]
    return logits, targets


def _batched(logits, targets, idx, extra_pad, V, g):
    """Pad the sequences idx to a common length plus extra_pad; padding gets random (distracting) logits."""
    T = max(len(targets[i]) for i in idx) + extra_pad
    lo = torch.randn(len(idx), T, V, generator=g) * 3
    tg = torch.zeros(len(idx), T, dtype=torch.long)
    for r, i in enumerate(idx):
        lo[r, :len(targets[i])] = logits[i]
        tg[r, :len(targets[i])] = targets[i]
    return lo, tg


@given(seed=st.integers(0, 2**31 - 1), n_seqs=st.integers(1, 8), cut=st.data())
def test_metrics_do_not_depend_on_batching_or_padding(seed, n_seqs, cut):
    V = 9
    logits, targets = _random_set(seed, n_seqs, V)
    g = torch.Generator().manual_seed(seed + 1)
    results = []
    for _ in range(2):   # two different cuts into batches, with different amounts of padding
        order = cut.draw(st.permutations(range(n_seqs)))
        sizes = []
        left = n_seqs
        while left:
            s = cut.draw(st.integers(1, left))
            sizes.append(s)
            left -= s
        acc = TokenMetrics(pad_id=0, ks=(1, 3))
        start = 0
        for s in sizes:
            lo, tg = _batched(logits, targets, order[start:start + s], cut.draw(st.integers(0, 3)), V, g)
            acc.update(lo, tg)
            start += s
        results.append(acc.summary())
    a, b = results
    assert a["n_tokens"] == b["n_tokens"] == sum(len(t) for t in targets)
    assert a["accuracy"] == b["accuracy"] and a["top3_accuracy"] == b["top3_accuracy"]
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-5)   # float32 sums in another order
    # and the NLL is the plain per-token mean computed the obvious way
    nll = torch.cat([F.cross_entropy(lo.double(), t, reduction="none") for lo, t in zip(logits, targets)])
    assert a["nll"] == pytest.approx(nll.mean().item(), rel=1e-5)


@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 4), T=st.integers(1, 6), extra=st.integers(1, 4))
def test_accuracy_is_invariant_to_padding(seed, B, T, extra):
    V = 7
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g)
    target = torch.randint(1, V, (B, T), generator=g)
    padded_logits = torch.cat([logits, torch.randn(B, extra, V, generator=g) * 10], dim=1)
    padded_target = F.pad(target, (0, extra), value=0)
    assert token_accuracy(padded_logits, padded_target) == token_accuracy(logits, target)
    assert topk_accuracy(padded_logits, padded_target, 3) == topk_accuracy(logits, target, 3)


@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 4), T=st.integers(1, 6), V=st.integers(2, 50))
def test_perfect_model_has_perplexity_one_and_accuracy_one(seed, B, T, V):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(1, V, (B, T), generator=g)
    target[:, -1] = 0 if T > 1 else target[:, -1]               # some padding when there is room
    logits = F.one_hot(target, V).float() * 100.0              # all mass on the right answer
    acc = TokenMetrics(pad_id=0, ks=(1,))
    acc.update(logits, target)
    if acc.n_tokens:
        assert acc.perplexity == pytest.approx(1.0, abs=1e-6)
        assert acc.accuracy == 1.0
    # a uniform model has perplexity V exactly
    uni = TokenMetrics(pad_id=0, ks=(1,))
    uni.update(torch.zeros(B, T, V), torch.randint(1, V, (B, T), generator=g))
    assert uni.perplexity == pytest.approx(V, rel=1e-5)


def test_bleu_hand_computed():
    # hypothesis 5 words, reference 6: p1 = 5/5, p2 = 3/4, p3 = 2/3, p4 = 1/2, brevity penalty exp(1 - 6/5).
    hyp = "yasama yetkisi meclise aittir devredilemez"
    ref = "yasama yetkisi meclise aittir yasama devredilemez"
    expected = 100 * math.exp(1 - 6 / 5) * (1 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    s = text_scores([hyp], [ref])
    assert s["bleu"] == pytest.approx(expected, abs=1e-9)
    assert s["sentence_bleu_mean"] == pytest.approx(expected, abs=1e-9)   # no zero counts: smoothing inert
    identical = text_scores([ref, hyp], [ref, hyp])
    assert identical["bleu"] == pytest.approx(100.0) and identical["chrf"] == pytest.approx(100.0)


def test_chrf_hand_computed():
    # Whitespace is ignored: "abcd" vs "abce". Char n-gram precision = recall per order:
    # n=1: 3/4, n=2: 2/3, n=3: 1/2, n=4: 0/1 (no 5- or 6-grams). Average 0.4791666..., so F2 = the same.
    s = text_scores(["ab cd"], ["ab ce"])
    assert s["chrf"] == pytest.approx(100 * (3 / 4 + 2 / 3 + 1 / 2 + 0) / 4, abs=1e-9)


def test_matches_sacrebleu_api_and_reports_signatures():
    hyps = ["anayasa madde 1 devletin şeklini belirler .", "bu hak kanunla sınırlanabilir",
            "mahkeme kararı kesindir", "seçimler beş yılda bir yapılır"]
    refs = ["anayasanın 1. maddesi devletin şeklini cumhuriyet olarak belirler .",
            "temel haklar yalnızca kanunla sınırlanabilir", "anayasa mahkemesi kararları kesindir",
            "seçimler beş yılda bir aynı gün yapılır"]
    s = text_scores(hyps, refs)
    assert s["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert s["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    sent = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)]
    assert s["sentence_bleu_mean"] == pytest.approx(sum(sent) / len(sent))
    # the smoothed sentence mean differs from corpus BLEU here (one pair shares no 4-gram)
    assert s["sentence_bleu_mean"] != pytest.approx(s["bleu"], abs=1e-3)
    assert s["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "eff:yes" in s["signatures"]["sentence_bleu"]
    assert "nc:6|nw:0" in s["signatures"]["chrf"]


def test_text_scores_rejects_mismatched_or_undecoded_input():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        text_scores(["a", "b"], ["a"])
    with pytest.raises(TypeError, match=r"hypotheses\[0\] is list"):
        text_scores([[1, 2]], ["a"])


# --- the conditioning gain's pieces ----------------------------------------------------------------------
from minillm.metrics import distinct_share, mismatched_sources  # noqa: E402


@given(st.integers(2, 12))
def test_mismatched_sources_is_a_derangement_that_keeps_every_answer(n):
    items = [([10 + i, 2], [1, 50 + i], [50 + i, 2]) for i in range(n)]
    swapped = mismatched_sources(items)
    assert [tgt for _, tgt, _ in swapped] == [tgt for _, tgt, _ in items]        # answers untouched, in order
    assert [out for _, _, out in swapped] == [out for _, _, out in items]
    assert sorted(src for src, _, _ in swapped) == sorted(src for src, _, _ in items)   # same questions
    assert all(s[0] != i[0] for s, i in zip(swapped, items))                    # none keeps its own


def test_mismatched_sources_needs_two_items():
    with pytest.raises(ValueError, match="at least 2"):
        mismatched_sources([([3, 2], [1, 3], [3, 2])])


def test_distinct_share_by_hand():
    assert distinct_share(["a", "a", "a", "a"]) == 0.25
    assert distinct_share(["a", "b", "a", "c"]) == 0.75
    with pytest.raises(ValueError):
        distinct_share([])
