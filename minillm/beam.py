"""Beam search: keep the K best partial answers instead of only the best one.

Greedy decoding commits to the most likely token at every step, and a token that looks best now can
lead to a worse answer overall. Beam search (Graves 2012, "Sequence Transduction with RNNs", section
3.2; Sutskever et al. 2014) keeps the K = ``num_beams`` best partial answers ("beams") by summed
log-probability, extends each by every token, and keeps the K best extensions again. Finished
answers are ranked with a length penalty (Wu et al. 2016), since every extra token adds a negative
log-probability and the raw sum prefers short answers.

Read ``beam_search_one`` first: one question, a Python list of hypotheses, a full forward pass per
beam per step. ``beam_search`` does the same for a batch of questions at once, with tensors and the
KV cache; tests/test_beam.py proves the two give the same best answer.

Tensor symbols: B questions (still searching), K beams, S source length, T answer tokens so far,
V vocabulary.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from minillm.decoding import GenerationConfig, process_logits, special_token_ban
from minillm.sampling import StepDecoder, special_ids


class Hypothesis(NamedTuple):
    """One candidate answer of a question."""
    score: float           # finished: sum of log-probabilities / length**alpha (length_normalised)
    ids: list[int]         # the answer tokens, without <bos> and without the final <eos>
    finished: bool         # True: ended in <eos>; False: ran into max_new_tokens


def length_normalised(score: float, length: int, alpha: float) -> float:
    """Score of a finished hypothesis: sum of log-probabilities / length**alpha, with length
    counting every answer token and the <eos>. This is Hugging Face's form; Wu et al. 2016 (GNMT,
    eq. 14) divide by ((5 + length) / 6)**alpha instead. Same idea: without it beam search prefers
    short answers, because every extra token adds a negative log-probability. alpha = 0 ranks by
    the raw sum."""
    return score / (length ** alpha)


def add_hypothesis(hyps: list[Hypothesis], K: int, hyp: Hypothesis) -> None:
    """Keep the K best finished hypotheses of one question, best first (a stable sort: ties keep
    their order)."""
    hyps.append(hyp)
    hyps.sort(key=lambda h: -h.score)
    del hyps[K:]


def search_is_over(hyps: list[Hypothesis], K: int, best_running: float, t: int, max_new: int,
                   alpha: float) -> bool:
    """Can no running beam still beat the K-th finished hypothesis? (after step t, 0-based)

    Log-probabilities are <= 0, so a running beam's sum only falls; with alpha > 0 its normalised
    score is at best sum / max_new**alpha (the longest it may grow), with alpha <= 0 at best
    sum / (t + 2)**alpha (one more token and <eos>). This bound is exact (what Hugging Face calls
    early_stopping="never"); HF's default stops sooner, on a heuristic that can miss a better,
    longer answer."""
    if best_running == float("-inf"):                    # no running beam left
        return True
    denominator = max_new ** alpha if alpha > 0 else (t + 2) ** alpha
    return len(hyps) >= K and hyps[-1].score >= best_running / denominator


# ------------------------------------------------------------------------------------------------
# The reference: one question, plain Python
# ------------------------------------------------------------------------------------------------

@torch.inference_mode()
def beam_search_one(model, src_ids: list[int], config: GenerationConfig,
                    on_step=None) -> Hypothesis:
    """Beam search for one question, written to be read; returns the best hypothesis.

    Every step: score each running beam's every one-token extension (a full forward pass over the
    prefix, then the same processors as every strategy), take the 2K best (at most K of them end in
    <eos>, so at least K go on). An <eos> extension that ranks among the K best becomes a finished
    hypothesis (this rule is Hugging Face's; it makes width 1 exactly greedy decoding); the K best
    others are the next beams. At max_new_tokens the running beams become hypotheses too, without
    <eos>. ``on_step(t, beams, hyps)``, when given, sees copies of the beams kept at step t (summed
    log-probability, answer tokens) and of the hypotheses so far, best first (the lesson draws its
    beam tree with it)."""
    special = special_ids(model)
    K, max_new, alpha = config.num_beams, config.max_new_tokens, config.length_penalty
    src = torch.tensor([src_ids], device=next(model.parameters()).device)         # (1, S)
    ban = special_token_ban(model.cfg.vocab_size, (special.pad, special.bos), src.device)
    beams = [(0.0, [])]                       # (summed log-probability, answer tokens so far)
    hyps: list[Hypothesis] = []
    for t in range(max_new):
        extensions = []
        for total, ids in beams:
            prefix = torch.tensor([[special.bos] + ids], device=src.device)     # (1, t + 1)
            logits = model(src, prefix)[:, -1, :].float()                        # (1, V)
            logits = process_logits(logits, prefix, config, ban)
            log_probs = logits.log_softmax(dim=-1)[0]                            # (V,)
            extensions += [(total + lp, ids, tok) for tok, lp in enumerate(log_probs.tolist())
                           if lp > -math.inf]
        extensions.sort(key=lambda e: -e[0])
        beams = []
        for place, (total, ids, tok) in enumerate(extensions[:2 * K]):
            if tok == special.eos and not config.ignore_eos:
                if place < K:
                    score = length_normalised(total, t + 1, alpha)
                    add_hypothesis(hyps, K, Hypothesis(score, ids, True))
            elif len(beams) < K:
                beams.append((total, ids + [tok]))
        if t == max_new - 1:              # out of room: the running beams are answers as they are
            for total, ids in beams:
                score = length_normalised(total, max_new, alpha)
                add_hypothesis(hyps, K, Hypothesis(score, ids, False))
        if on_step is not None:
            on_step(t, list(beams), list(hyps))       # copies: the search goes on changing both
        best_running = max((total for total, _ in beams), default=-math.inf)
        if search_is_over(hyps, K, best_running, t, max_new, alpha):
            break
    return hyps[0]


# ------------------------------------------------------------------------------------------------
# The batched search: B questions x K beams in one tensor, the KV cache reordered with the beams
# ------------------------------------------------------------------------------------------------

class Extensions(NamedTuple):
    """The 2K best one-token extensions of each question's beams at one step, best first."""
    scores: torch.Tensor      # (B, 2K) summed log-probabilities
    beam_of: torch.Tensor     # (B, 2K) which of the question's K beams each one extends
    tok: torch.Tensor         # (B, 2K) the new token
    is_eos: torch.Tensor      # (B, 2K) it ends the answer


def best_extensions(beam_scores: torch.Tensor, logits: torch.Tensor, K: int, eos: int,
                    ignore_eos: bool) -> Extensions:
    """beam_scores (B, K) and the processed logits (B*K, V) -> the 2K best of the K*V extensions."""
    B, V = beam_scores.size(0), logits.size(-1)
    log_probs = logits.log_softmax(dim=-1)                                    # (B*K, V)
    cand = (beam_scores.view(-1, 1) + log_probs).view(B, K * V)               # (B, K*V)
    scores, index = cand.topk(2 * K, dim=-1)                                  # (B, 2K), best first
    beam_of, tok = index // V, index % V                              # (B, 2K) source beam, token
    is_eos = (tok == eos) & (not ignore_eos)                                  # (B, 2K)
    return Extensions(scores, beam_of, tok, is_eos)


def add_finished(hyps: list[list[Hypothesis]], items: list[int], ext: Extensions,
                 tokens: torch.Tensor, K: int, t: int, alpha: float) -> None:
    """<eos> extensions among the K best become finished hypotheses (few per step: a loop)."""
    place = torch.arange(2 * K, device=tokens.device)                        # (2K,)
    new_hyp = ext.is_eos & (place < K) & torch.isfinite(ext.scores)            # (B, 2K)
    for b, j in new_hyp.nonzero().tolist():
        row = b * K + int(ext.beam_of[b, j])
        score = length_normalised(float(ext.scores[b, j]), t + 1, alpha)
        add_hypothesis(hyps[items[b]], K, Hypothesis(score, tokens[row, 1:t + 1].tolist(), True))


def next_beams(ext: Extensions, K: int):
    """The K best extensions that do not end in <eos>, in rank order (<eos> ones sorted last):
    (their scores (B, K), their tokens (B, K), the rows (B, K) of the beams they extend)."""
    B = ext.scores.size(0)
    place = torch.arange(2 * K, device=ext.scores.device)                    # (2K,)
    order = (ext.is_eos.long() * 2 * K + place).argsort(dim=-1)[:, :K]     # (B, K) places in the 2K
    scores = ext.scores.gather(1, order)                                      # (B, K)
    tok = ext.tok.gather(1, order)                                            # (B, K)
    first_row = (torch.arange(B, device=order.device) * K).unsqueeze(1)       # (B, 1)
    return scores, tok, first_row + ext.beam_of.gather(1, order)              # (B, K) each


def beam_search(model, src: torch.Tensor, config: GenerationConfig) -> list[Hypothesis]:
    """``beam_search_one`` for every question of src (B, S) at once; returns each question's best
    hypothesis.

    Each question keeps K rows of the batch, one per beam. Every step scores all K*V one-token
    extensions of a question in one (B, K*V) tensor and takes the 2K best, with the rules of
    ``beam_search_one``. The K best extensions not ending in <eos> become the next beams, and the
    KV cache is reordered with them (``cache.reorder``): beam k of the next step may continue beam j
    of this one. A question leaves the batch when ``search_is_over``.
    """
    special = special_ids(model)
    B, K = src.size(0), config.num_beams
    max_new, alpha = config.max_new_tokens, config.length_penalty
    device = src.device
    decoder = StepDecoder(model, src, config)
    decoder.keep(torch.arange(B, device=device).repeat_interleave(K))   # (B*K): K copies of each
    tokens = torch.full((B * K, 1 + max_new), special.pad, dtype=torch.long, device=device)
    tokens[:, 0] = special.bos
    # subtle: at the start all K beams are the same "<bos>"; if all were live, the first step would
    # pick the same token K times. Only beam 0 starts live; the others start at -inf.
    beam_scores = torch.full((B, K), float("-inf"), device=device)    # (B, K) summed log-probs
    beam_scores[:, 0] = 0.0
    items = list(range(B))            # original question index of each question still searching
    hyps: list[list[Hypothesis]] = [[] for _ in range(B)]
    for t in range(max_new):
        logits = decoder.next_logits(tokens[:, :t + 1])                       # (nB*K, V)
        ext = best_extensions(beam_scores, logits, K, special.eos, config.ignore_eos)
        add_finished(hyps, items, ext, tokens, K, t, alpha)
        beam_scores, next_tok, src_rows = next_beams(ext, K)                  # (nB, K) each
        if t == max_new - 1:          # out of room: the running beams become hypotheses as they are
            for b, k in torch.isfinite(beam_scores).nonzero().tolist():
                ids = tokens[int(src_rows[b, k]), 1:t + 1].tolist() + [int(next_tok[b, k])]
                score = length_normalised(float(beam_scores[b, k]), max_new, alpha)
                add_hypothesis(hyps[items[b]], K, Hypothesis(score, ids, False))
            break
        best_running = beam_scores.max(dim=1).values.tolist()                 # (nB,)
        keep_items = [b for b in range(len(items)) if not search_is_over(
            hyps[items[b]], K, best_running[b], t, max_new, alpha)]
        if not keep_items:
            break
        keep = torch.as_tensor(keep_items, device=device)
        # One index_select does both jobs: follow each beam's source beam, drop finished questions.
        rows = src_rows.index_select(0, keep).flatten()                       # (nB'*K,)
        decoder.keep(rows)
        tokens = tokens.index_select(0, rows)
        tokens[:, t + 1] = next_tok.index_select(0, keep).flatten()
        beam_scores = beam_scores.index_select(0, keep)
        items = [items[b] for b in keep_items]
    return [h[0] for h in hyps]
