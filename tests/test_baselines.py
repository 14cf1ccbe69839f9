"""Specification of minillm/machinery/baselines.py's answer-only Kneser–Ney trigram baseline.

Checked against a naive implementation written here from the formulas of Chen & Goodman 1998 (one
probability at a time, straight from the counts), against a case small enough to do by hand, and for the
property every language model must have: each conditional distribution sums to 1 over the vocabulary.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minillm.machinery.baselines import KneserNeyTrigram

BOS = 1


def naive_kn(train, V, D=0.75):
    """P(w | u, v) computed from scratch for each query: the three interpolated levels, no shared tables."""
    grams = []
    for seq in train:
        toks = [BOS, BOS] + list(seq)
        grams += list(zip(toks, toks[1:], toks[2:]))
    tri = {}
    for g in grams:
        tri[g] = tri.get(g, 0) + 1
    bigram_types = {(v, w) for (_, v, w) in tri}

    def p1(w):
        n_w = len({v for (v, x) in bigram_types if x == w})
        total = len(bigram_types)
        n_types = len({x for (_, x) in bigram_types})
        return max(n_w - D, 0) / total + D * n_types / total / V

    def p2(w, v):
        cont = {x: len({u for (u, a, b) in tri if a == v and b == x}) for x in range(V)}
        denom = sum(cont.values())
        if denom == 0:
            return p1(w)
        types = sum(1 for c in cont.values() if c > 0)
        return max(cont[w] - D, 0) / denom + D * types / denom * p1(w)

    def p3(w, u, v):
        c_uv = sum(c for (a, b, _), c in tri.items() if (a, b) == (u, v))
        if c_uv == 0:
            return p2(w, v)
        types = sum(1 for (a, b, _) in tri if (a, b) == (u, v))
        return max(tri.get((u, v, w), 0) - D, 0) / c_uv + D * types / c_uv * p2(w, v)

    return p3


def test_hand_computed_unigram_level():
    # Train on one target "5 2": trigrams (1,1,5) and (1,5,2). Bigram types: (1,5), (5,2): each of 5 and 2
    # is preceded by one distinct token, so N1+(· 5) = N1+(· 2) = 1 and N1+(· ·) = 2 types.
    # P1(5) = (1 - 0.75)/2 + 0.75 * 2/2 / V ; P1(7) (never seen) = 0.75 * 2/2 / V.
    V = 10
    kn = KneserNeyTrigram([[5, 2]], V, BOS)
    assert kn.p1[5] == pytest.approx(0.25 / 2 + 0.75 / V)
    assert kn.p1[7] == pytest.approx(0.75 / V)
    # Context (3, 4) never seen and 4 never a middle word: the trigram falls back to P1 entirely.
    assert kn.distribution(3, 4)[7] == pytest.approx(0.75 / V)
    # Context (1, 1) seen once, followed by 5: P3(5 | 1 1) = (1 - 0.75)/1 + 0.75 * 1/1 * P2(5 | 1).
    # P2(5 | 1): bigram (1, 5) has one distinct predecessor (1), N1+(· 1 ·) = 1, one type after 1:
    #   P2(5 | 1) = (1 - 0.75)/1 + 0.75 * 1/1 * P1(5).
    p2 = 0.25 + 0.75 * kn.p1[5]
    assert kn.distribution(1, 1)[5] == pytest.approx(0.25 + 0.75 * p2)


@given(st.lists(st.lists(st.integers(2, 7), min_size=1, max_size=6), min_size=1, max_size=6),
       st.integers(0, 7), st.integers(0, 7), st.sampled_from([0.5, 0.75, 0.9]))
def test_equals_naive_formulas_and_sums_to_one(train, u, v, D):
    V = 8
    kn = KneserNeyTrigram(train, V, BOS, discount=D)
    ref = naive_kn(train, V, D)
    dist = kn.distribution(u, v)
    assert dist.sum() == pytest.approx(1.0, abs=1e-12)
    assert (dist > 0).all()                     # the uniform share: no token is impossible
    for w in range(V):
        assert dist[w] == pytest.approx(ref(w, u, v), rel=1e-10, abs=1e-15)


def test_score_is_mean_nll_and_argmax_accuracy():
    train = [[3, 4, 5, 2], [3, 4, 6, 2], [3, 4, 5, 2]]
    kn = KneserNeyTrigram(train, 8, BOS)
    s = kn.score([[3, 4, 5, 2]])
    probs = [kn.distribution(1, 1)[3], kn.distribution(1, 3)[4], kn.distribution(3, 4)[5], kn.distribution(4, 5)[2]]
    assert s["n_tokens"] == 4
    assert s["nll"] == pytest.approx(-np.mean(np.log(probs)))
    assert s["perplexity"] == pytest.approx(math.exp(s["nll"]))
    assert s["accuracy"] == 1.0                 # every step of a training sequence seen twice is the argmax


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no training sequences"):
        KneserNeyTrigram([], 8, BOS)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        KneserNeyTrigram([[9]], 8, BOS)
    with pytest.raises(ValueError, match="discount"):
        KneserNeyTrigram([[3]], 8, BOS, discount=1.0)
    with pytest.raises(ValueError, match="no tokens"):
        KneserNeyTrigram([[3]], 8, BOS).score([])
