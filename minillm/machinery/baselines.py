"""Baselines a trained model must beat, measured on the same data (bench/learning.py prints them beside it).

1. Nearest neighbour: answer with the training answer of the most similar training question. A model that
   cannot beat this retrieval on held-out questions has learned no more than "find the closest question".
2. A model that never sees the question: an interpolated Kneser–Ney trigram of the answers. A seq2seq model
   earns its encoder only if it beats a model of answers alone.

The trigram is the classic count-based language model (Kneser & Ney 1995; interpolated form and notation of
Chen & Goodman 1998, §3.5), trained and scored on exactly the targets minillm predicts (a dataset's
tgt_out_ids: answer ids + <eos>), each answer starting from two <bos> of context, so its perplexity is
directly comparable with the model's.

    P3(w | u v) = max(c(u v w) - D, 0) / c(u v ·)  +  D · N1+(u v ·) / c(u v ·) · P2(w | v)
    P2(w | v)   = max(N1+(· v w) - D, 0) / N1+(· v ·)  +  D · N1+(v ·) / N1+(· v ·) · P1(w)
    P1(w)       = max(N1+(· w) - D, 0) / N1+(· ·)  +  D · N1+(· ·)_types / N1+(· ·) · 1/V

c(...) are counts; N1+(· v w) is the number of distinct words u seen before "v w" (a continuation count:
how many contexts w completes, not how often). The lowest order interpolates with the uniform 1/V, so a
token never seen in training still gets a little probability and no NLL is infinite. A context never seen
uses the next order down. Every level sums to 1 over the vocabulary (tests/test_baselines.py checks it).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np


def nearest_neighbour_answers(train_pairs, questions, tokenizer) -> list[str]:
    """For each question, the answer of the training question with the highest token overlap.

    Overlap is the Jaccard index |A & B| / |A | B| of the two questions' sets of token ids; ties go to the
    earlier training pair. A model that cannot beat this retrieval baseline on held-out questions has not
    learned more than "find the most similar question you saw".
    """
    if not train_pairs:
        raise ValueError("nearest_neighbour_answers: no training pairs to retrieve from")
    train_sets = [set(ids) for ids in tokenizer.encode_batch([q for q, _ in train_pairs])]
    answers = []
    for ids in tokenizer.encode_batch(list(questions)):
        query = set(ids)
        best, best_score = 0, -1.0
        for j, cand in enumerate(train_sets):
            union = len(query | cand)
            score = len(query & cand) / union if union else 0.0
            if score > best_score:
                best, best_score = j, score
        answers.append(train_pairs[best][1])
    return answers


class KneserNeyTrigram:
    """Interpolated Kneser–Ney trigram over token ids 0..vocab_size-1, with a fixed discount D."""

    def __init__(self, targets, vocab_size: int, bos_id: int, discount: float = 0.75):
        """targets: iterable of lists of token ids to predict (answer ids + <eos>, as Seq2SeqDataset's tgt_out)."""
        if not 0.0 < discount < 1.0:
            raise ValueError(f"discount must be in (0, 1), got {discount}")
        self.V, self.bos, self.D = vocab_size, bos_id, discount
        tri = Counter()
        for seq in targets:
            toks = [bos_id, bos_id] + list(seq)
            for u, v, w in zip(toks, toks[1:], toks[2:]):
                if not 0 <= w < vocab_size:
                    raise ValueError(f"token id {w} is outside the vocabulary [0, {vocab_size})")
                tri[(u, v, w)] += 1
        if not tri:
            raise ValueError("KneserNeyTrigram: no training sequences")
        # highest order: plain counts
        self.c_uvw = tri
        self.c_uv = Counter()                       # c(u v ·)
        self.types_uv = Counter()                   # N1+(u v ·)
        self.next_uv = defaultdict(dict)            # (u, v) -> {w: c(u v w)}
        # middle order: continuation counts of the bigram (v, w) = distinct u before it
        self.n_vw = Counter()                       # N1+(· v w)
        for (u, v, w), c in tri.items():
            self.c_uv[(u, v)] += c
            self.types_uv[(u, v)] += 1
            self.next_uv[(u, v)][w] = c
            self.n_vw[(v, w)] += 1
        self.n_v = Counter()                        # N1+(· v ·) = Σ_w N1+(· v w)
        self.types_v = Counter()                    # N1+(v ·): distinct w after v
        self.next_v = defaultdict(dict)             # v -> {w: N1+(· v w)}
        self.n_w = Counter()                        # N1+(· w): distinct v before w (lowest order)
        for (v, w), n in self.n_vw.items():
            self.n_v[v] += n
            self.types_v[v] += 1
            self.next_v[v][w] = n
            self.n_w[w] += 1
        total = sum(self.n_w.values())              # N1+(· ·): distinct bigram types
        p1 = np.full(vocab_size, discount * len(self.n_w) / total / vocab_size)   # the uniform share
        for w, n in self.n_w.items():
            p1[w] += (n - discount) / total
        self.p1 = p1                                # P1 over the whole vocabulary, sums to 1
        self._cache: dict = {}

    def distribution(self, u: int, v: int) -> np.ndarray:
        """P(· | u v) over the whole vocabulary, float64 (V,), summing to 1. Read-only: it may be cached."""
        key = (u, v)
        if key in self._cache:
            return self._cache[key]
        D = self.D
        p = self.p1.copy()
        if self.n_v[v] > 0:                         # P2(· | v)
            p = p * (D * self.types_v[v] / self.n_v[v])
            for w, n in self.next_v[v].items():
                p[w] += (n - D) / self.n_v[v]
        if self.c_uv[key] > 0:                      # P3(· | u v)
            c = self.c_uv[key]
            p = p * (D * self.types_uv[key] / c)
            for w, n in self.next_uv[key].items():
                p[w] += (n - D) / c
        if len(self._cache) < 2_000:                # each entry is V floats (59 KB at V = 7,367)
            self._cache[key] = p
        return p

    def score(self, targets) -> dict:
        """Teacher-forced scores on targets (lists of ids, as in __init__): {"nll": nats per token,
        "perplexity", "accuracy": share of tokens that are the argmax, "nll_sum", "n_tokens"}."""
        nll_sum, n, correct = 0.0, 0, 0
        for seq in targets:
            toks = [self.bos, self.bos] + list(seq)
            for u, v, w in zip(toks, toks[1:], toks[2:]):
                p = self.distribution(u, v)
                nll_sum -= math.log(p[w])
                correct += int(p.argmax() == w)
                n += 1
        if n == 0:
            raise ValueError("KneserNeyTrigram.score: no tokens to score")
        mean = nll_sum / n
        return {"nll": mean, "perplexity": math.exp(mean), "accuracy": correct / n, "nll_sum": nll_sum,
                "n_tokens": n}
