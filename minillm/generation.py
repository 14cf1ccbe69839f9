"""Questions in, answers out: ``generate`` encodes the questions, decodes them in batches with the chosen
strategy (minillm.decoding: greedy, sample; minillm.beam: beam) and, on request, recomputes the details the web
page draws: each answer token's probability and the decoder's cross-attention.

    answers = generate(model, tokenizer, ["soru 1", "soru 2"], GenerationConfig(strategy="beam"))
    answers[0].text

Tensor symbols: B batch, S source length, T answer length, V vocabulary, H heads, N decoder layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from minillm.batching import pad
from minillm.beam import beam_search
from minillm.data import encode_source
from minillm.decoding import (SETTINGS, STRATEGIES, GenerationConfig, greedy_or_sample,  # noqa: F401 (re-exported)
                              never_generated, process_logits, special_ids)


@dataclass
class Answer:
    """One generated answer. ``ids`` excludes <bos> and the final <eos>; T below is ``len(ids)``."""
    text: str
    ids: list[int]
    token_probs: list[float] | None = None           # return_details: probability of each chosen token (len T)
    cross_attention: torch.Tensor | None = None      # return_details: (N, H, T, S) cross-attention weights
    src_tokens: list[str] = field(default_factory=list)  # printable source tokens: the S axis of the heatmap
    tgt_tokens: list[str] = field(default_factory=list)  # printable answer tokens: the T axis of the heatmap


def token_details(model, src: torch.Tensor, answers: list[list[int]], config: GenerationConfig):
    """Teacher-forces each answer through the decoder once (all positions in one ``decode_step`` call) and
    returns, per row, (probabilities of the answer's tokens, cross-attention (N, H, T, S_real)).

    The probability is that of the distribution the strategy chose from: the model's softmax after the same
    processors (so after temperature/top-k/top-p when sampling). Recomputing here, instead of recording during
    the search, keeps the decoding loops lean and gives beam search its details for free (a beam's tokens
    are reshuffled at every step)."""
    special = special_ids(model)
    B = src.size(0)
    T = max(1, max(len(a) for a in answers))      # the longest answer; at least 1, so the decoder has a position
    # <bos> + answer + one <pad> (an empty answer still needs a next token to read), right-padded: (B, >= T + 1)
    answer_in_ids = pad([[special.bos] + ids + [special.pad] for ids in answers], special.pad).to(src.device)
    enc_out, src_mask = model.encode(src)                                     # (B, S, C), (B, S)
    cache = model.make_cache(enc_out, src_mask)
    # subtle: padding after a short answer is harmless: causal self-attention never lets an earlier position
    # see a later one, and we read only each row's own positions.
    logits, cross = model.decode_step(answer_in_ids[:, :T], cache, need_weights=True)  # (B, T, V), N x (B, H, T, S)
    cross = torch.stack(cross, dim=1)                                         # (B, N, H, T, S)
    probs = torch.empty(B, T, device=src.device)
    never = never_generated(logits.size(-1), (special.pad, special.bos), src.device)
    for t in range(T):
        step_logits = process_logits(logits[:, t, :].float(), answer_in_ids[:, :t + 1], config, never)  # (B, V)
        probs[:, t] = step_logits.softmax(dim=-1).gather(1, answer_in_ids[:, t + 1:t + 2]).squeeze(1)
    src_len = src_mask.sum(dim=1).tolist()                                    # real source tokens per row
    return [(probs[i, :len(a)].tolist(), cross[i, :, :, :len(a), :src_len[i]].float().cpu())
            for i, a in enumerate(answers)]


def answer_length(model) -> int:
    """The most answer tokens the model can write: the decoder reads <bos> + all but the last answer token,
    max_new_tokens positions in all, and has cfg.max_len."""
    return model.cfg.max_len


def source_length(model) -> int:
    """The source length the model was trained on: ``cfg.max_src_len``, or ``cfg.max_len`` for checkpoints
    saved before max_src_len existed."""
    return model.cfg.max_src_len or model.cfg.max_len


@torch.inference_mode()
def decode_ids(model, src_ids: list[list[int]], config: GenerationConfig) -> list[tuple[list[int], bool]]:
    """Generate for already tokenised sources. Returns, per source, (answer ids without <bos>/<eos>, whether
    it ended at <eos>). The model must be in eval mode (``generate`` sees to that)."""
    if config.max_new_tokens > answer_length(model):
        raise ValueError(f"max_new_tokens = {config.max_new_tokens} needs more decoder positions than the model "
                         f"has (max_len = {model.cfg.max_len})")
    device = next(model.parameters()).device
    src = pad(src_ids, model.cfg.pad_id).to(device)                          # (B, S)
    if config.strategy == "beam":
        return [(h.ids, h.finished) for h in beam_search(model, src, config)]
    return greedy_or_sample(model, src, config, special_ids(model))


@torch.inference_mode()
def generate(model, tokenizer, questions: list[str], config: GenerationConfig | None = None,
             return_details: bool = False, batch_size: int = 32) -> list[Answer]:
    """Answer each question; returns one ``Answer`` per question, in order.

    Each question becomes encoder input exactly as training built it (``data.encode_source``: cleaned,
    tokenised, cut to the model's source length, <eos> appended). Questions are decoded ``batch_size`` at a
    time, sorted by length so that a batch carries little padding (greedy and beam answers do not depend on the
    batching; sampled ones depend on the seed AND on which questions share a batch, since the rows draw from one
    generator). With ``return_details`` each answer also carries the probability of each of its tokens and the
    cross-attention weights (N, H, T, S), for the web page."""
    if isinstance(questions, str) or not isinstance(questions, (list, tuple)):
        raise TypeError(f"questions must be a list of str, got {type(questions).__name__}")
    for q in questions:
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"each question must be a non-empty string, got {q!r:.60}")
    config = config or GenerationConfig()
    src_ids = [encode_source(tokenizer, q, source_length(model))[0] for q in questions]
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]))
    answers: list = [None] * len(src_ids)
    was_training = model.training
    model.eval()                                   # dropout off; restored below (the trainer generates mid-run)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            chunk_src = [src_ids[i] for i in chunk]
            results = decode_ids(model, chunk_src, config)
            details = None
            if return_details:
                src = pad(chunk_src, model.cfg.pad_id).to(next(model.parameters()).device)   # (B, S)
                details = token_details(model, src, [ids for ids, _ in results], config)
            for j, i in enumerate(chunk):
                ids = results[j][0]
                answer = Answer(text=tokenizer.decode(ids), ids=ids,
                                src_tokens=[tokenizer.id_to_token_str(x) for x in src_ids[i]],
                                tgt_tokens=[tokenizer.id_to_token_str(x) for x in ids])
                if details is not None:
                    answer.token_probs, answer.cross_attention = details[j]
                answers[i] = answer
    finally:
        model.train(was_training)
    return answers
