"""Scoring a model on held-out pairs: teacher-forced token metrics and the answers it writes itself.

One definition of an evaluation record, used by the trainer and by bench/learning.py for its peer (a
Hugging Face BART scored on the same items). Two halves:

  * teacher forced: the model sees the reference answer's prefix and is scored on the next token:
    NLL, perplexity, (top-5) accuracy, NLL per answer character (comparable between vocabularies),
    and the conditioning gain: the NLL with each question swapped for another, minus the NLL with
    its own. A model that does not read the question has a gain of 0
    (minillm.metrics.mismatched_sources).
  * generated: greedy answers scored against the references with BLEU and chrF, and the share of
    distinct answers (a model that gives every question the same answer has 1/n).
"""
from __future__ import annotations

import torch

from minillm.batching import TokenBatchSampler, collate
from minillm.metrics import TokenMetrics, distinct_share, mismatched_sources, text_scores


@torch.no_grad()
def score_items(logits_fn, items: list, pad_id: int, batch_tokens: int, device) -> TokenMetrics:
    """Teacher-forced token metrics over (src_ids, tgt_in_ids, tgt_out_ids) items, in length-sorted
    batches of at most batch_tokens padded tokens. logits_fn(src_ids (B, S), tgt_in_ids (B, T)) ->
    logits (B, T, V): any encoder-decoder model."""
    metrics = TokenMetrics(pad_id=pad_id, ks=(1, 5))
    lengths = [(len(src), len(tgt_in)) for src, tgt_in, _ in items]
    for indices in TokenBatchSampler(lengths, batch_tokens, shuffle=False):
        b = {k: v.to(device) for k, v in collate([items[i] for i in indices], pad_id).items()}
        metrics.update(logits_fn(b["src_ids"], b["tgt_in_ids"]).float(), b["tgt_out_ids"])
    return metrics


def answer_chars(items: list, tokenizer) -> int:
    """Characters of the answers as the model is scored on them (cut to max_tgt_len), <eos> counted
    as one: the denominator of NLL per character."""
    eos = tokenizer.eos_id
    return sum(len(tokenizer.decode([t for t in out if t != eos])) + (out[-1] == eos)
               for _, _, out in items)


def teacher_forced_record(logits_fn, items: list, pad_id: int, batch_tokens: int, device,
                          n_chars: int) -> dict:
    """nll, perplexity, accuracy, top5_accuracy, n_tokens, nll_per_char and, with at least 2 items,
    cond_gain. n_chars is answer_chars(items), the denominator of nll_per_char."""
    metrics = score_items(logits_fn, items, pad_id, batch_tokens, device)
    record = {**metrics.summary(), "nll_per_char": metrics.nll_sum / n_chars}
    if len(items) >= 2:
        swapped = score_items(logits_fn, mismatched_sources(items), pad_id, batch_tokens, device)
        record["cond_gain"] = swapped.mean_nll - record["nll"]
    return record


def answers_record(hypotheses: list[str], references: list[str]) -> dict:
    """The generated part of an evaluation record: corpus BLEU, chrF, share of distinct answers."""
    scores = text_scores(hypotheses, references)
    return {"bleu": scores["bleu"], "chrf": scores["chrf"], "n_generated": len(hypotheses),
            "distinct": distinct_share(hypotheses)}
