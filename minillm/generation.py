"""Questions in, answers out: ``generate`` encodes the questions, decodes them in batches with the
chosen strategy (minillm.sampling: greedy, sample; minillm.beam: beam) and, on request, recomputes
the details the web page draws: each answer token's probability, the decoder's cross- and
self-attention, and each step's top candidates before and after the processors (what temperature,
top-k, top-p and the penalties changed). The interactive prompt streams an answer piece by piece
with the same steps (minillm.machinery.streaming).

    answers = generate(model, tokenizer, ["soru 1", "soru 2"], GenerationConfig(strategy="beam"))
    answers[0].text

Tensor symbols: B batch, S source length, T answer length, V vocabulary, H heads, N decoder layers.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from minillm.batching import pad
from minillm.beam import beam_search
from minillm.decoding import STRATEGIES, GenerationConfig  # noqa: F401 (re-exported)
from minillm.decoding import process_logits, special_token_ban
from minillm.sampling import greedy_or_sample, special_ids
from minillm.retrieval import Hit, encoder_input


@dataclass
class Answer:
    """One generated answer. ``ids`` excludes <bos> and the final <eos>; T below is ``len(ids)``."""
    text: str
    ids: list[int]
    # return_details: the probability of each chosen token (len T)
    token_probs: list[float] | None = None
    # return_details: (N, H, T, S) cross-attention weights
    cross_attention: torch.Tensor | None = None
    # return_details: (N, H, T, T) decoder self-attention weights; row t is the step that wrote
    # ids[t], column j the decoder input at position j (<bos>, then ids[:-1]); causal, so zero above
    # the diagonal.
    self_attention: torch.Tensor | None = None
    # return_details: per answer token, the top candidates as [(id, probability), ...], best first:
    # "raw" from the model's own softmax, "processed" after the processors the strategy used
    # (zero-probability ones left out).
    steps: list[dict] | None = None
    # what the encoder read: the question, then the passages
    src_ids: list[int] = field(default_factory=list)
    # printable source tokens (the S axis of the heatmap) and answer tokens (its T axis)
    src_tokens: list[str] = field(default_factory=list)
    tgt_tokens: list[str] = field(default_factory=list)
    # the passages the encoder read after the question, in that order (retrieval.Hit: .passage with
    # its id, article or pair and heading; .score; .how); empty without retrieval, or when no
    # passage matched
    sources: list[Hit] = field(default_factory=list)


def top_candidates(probs: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
    """(B, V) probabilities -> per row the k most probable (id, probability), best first, zeros
    left out."""
    p, ids = probs.topk(min(k, probs.size(-1)), dim=-1)                       # (B, k) each
    return [[(int(i), float(q)) for i, q in zip(row_ids, row_p) if q > 0]
            for row_ids, row_p in zip(ids.tolist(), p.tolist())]


def token_details(model, src: torch.Tensor, answers: list[list[int]], config: GenerationConfig,
                  top: int = 5):
    """Teacher-forces each answer through the decoder once (all positions in one ``decode_step``
    call) and returns, per row, (probabilities of the answer's tokens, cross-attention
    (N, H, T, S_real), self-attention (N, H, T, T), steps): ``steps[t]`` holds the ``top``
    candidates at step t, {"raw": [(id, p), ...], "processed": [(id, p), ...]}, before and after
    ``process_logits`` (see ``Answer.steps``).

    The probability is that of the distribution the strategy chose from: the model's softmax after
    the same processors (so after temperature/top-k/top-p when sampling). Recomputing here, instead
    of recording during the search, keeps the decoding loops lean and gives beam search its details
    for free (a beam's tokens are reshuffled at every step)."""
    special = special_ids(model)
    B = src.size(0)
    T = max(1, max(len(a) for a in answers))   # the longest answer; at least 1 decoder position
    # <bos> + answer + one <pad> (an empty answer still needs a next token to read), right-padded:
    # (B, >= T + 1)
    rows = [[special.bos] + ids + [special.pad] for ids in answers]
    answer_in_ids = pad(rows, special.pad).to(src.device)
    enc_out, src_mask = model.encode(src)                                     # (B, S, C), (B, S)
    cache = model.make_cache(enc_out, src_mask, src)
    # subtle: padding after a short answer is harmless: causal self-attention never lets an earlier
    # position see a later one, and we read only each row's own positions.
    logits, cross, self_w = model.decode_step(answer_in_ids[:, :T], cache, need_weights=True)
    cross = torch.stack(cross, dim=1)                 # N x (B, H, T, S) -> (B, N, H, T, S)
    self_w = torch.stack(self_w, dim=1)               # N x (B, H, T, T) -> (B, N, H, T, T)
    probs = torch.empty(B, T, device=src.device)
    steps: list[list[dict]] = [[] for _ in range(B)]
    ban = special_token_ban(logits.size(-1), (special.pad, special.bos), src.device)
    for t in range(T):
        raw_logits = logits[:, t, :].float()                                   # (B, V)
        step_logits = process_logits(raw_logits, answer_in_ids[:, :t + 1], config, ban)
        step_probs = step_logits.softmax(dim=-1)              # (B, V): what the strategy chose from
        probs[:, t] = step_probs.gather(1, answer_in_ids[:, t + 1:t + 2]).squeeze(1)
        raw = top_candidates(raw_logits.softmax(dim=-1), top)   # the model's own distribution
        processed = top_candidates(step_probs, top)
        for i, a in enumerate(answers):
            if t < len(a):
                steps[i].append({"raw": raw[i], "processed": processed[i]})
    src_len = src_mask.sum(dim=1).tolist()                             # real source tokens per row
    return [(probs[i, :len(a)].tolist(), cross[i, :, :, :len(a), :src_len[i]].float().cpu(),
             self_w[i, :, :, :len(a), :len(a)].float().cpu(), steps[i])
            for i, a in enumerate(answers)]


def answer_length(model) -> int:
    """The most answer tokens the model can write: the decoder reads <bos> + all but the last
    answer token, max_new_tokens positions in all, and has cfg.max_len."""
    return model.cfg.max_len


def source_length(model) -> int:
    """The source length the model was trained on: ``cfg.max_src_len``, or ``cfg.max_len`` for
    checkpoints saved before max_src_len existed."""
    return model.cfg.max_src_len or model.cfg.max_len


@torch.inference_mode()
def decode_ids(model, src_ids: list[list[int]], config: GenerationConfig,
               on_token=None) -> list[tuple[list[int], bool]]:
    """Generate for already tokenised sources. Returns, per source, (answer ids without
    <bos>/<eos>, whether it ended at <eos>). The model must be in eval mode (``generate`` sees to
    that). ``on_token(rows, next_ids)`` is called at every step of greedy decoding and sampling
    (see ``sampling.greedy_or_sample``), not of beam search, whose hypotheses are reordered at
    every step."""
    if config.max_new_tokens > answer_length(model):
        raise ValueError(f"max_new_tokens = {config.max_new_tokens} needs more decoder positions "
                         f"than the model has (max_len = {model.cfg.max_len})")
    device = next(model.parameters()).device
    src = pad(src_ids, model.cfg.pad_id).to(device)                          # (B, S)
    if config.strategy == "beam":
        return [(h.ids, h.finished) for h in beam_search(model, src, config)]
    return greedy_or_sample(model, src, config, on_token)


def check_question(question) -> None:
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"each question must be a non-empty string, got {question!r:.60}")


@contextmanager
def eval_mode(model):
    """Dropout off while generating; the model's mode is restored after (the trainer generates
    mid-run)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def make_answer(tokenizer, src_ids: list[int], ids: list[int], sources: list[Hit]) -> Answer:
    return Answer(text=tokenizer.decode(ids), ids=ids, src_ids=list(src_ids),
                  src_tokens=[tokenizer.id_to_token_str(x) for x in src_ids],
                  tgt_tokens=[tokenizer.id_to_token_str(x) for x in ids], sources=sources)


def encode_question(model, tokenizer, question: str,
                    retrieval: bool = True) -> tuple[list[int], list[Hit]]:
    """(src_ids, sources): the encoder input for one question, by retrieval.encoder_input, as
    training built it: the model's source length, and its retriever (the corpus its checkpoint
    records) unless ``retrieval`` is False (to compare an answer with and without the passages)."""
    retriever = model.retriever if retrieval else None
    src_ids, _, hits = encoder_input(tokenizer, question, source_length(model), retriever)
    return src_ids, hits


@torch.inference_mode()
def generate(model, tokenizer, questions: list[str], config: GenerationConfig | None = None,
             return_details: bool = False, batch_size: int = 32,
             retrieval: bool = True) -> list[Answer]:
    """Answer each question; returns one ``Answer`` per question, in order.

    Each question becomes encoder input exactly as training built it (``encode_question``:
    cleaned, tokenised, cut to the model's source length, <eos> appended, then the passages the
    model's retriever finds, which ``answer.sources`` lists; ``retrieval=False`` leaves them out).
    Questions are decoded ``batch_size`` at a time, sorted by length so that a batch carries little
    padding (greedy and beam answers do not depend on the batching; sampled ones depend on the seed
    AND on which questions share a batch, since the rows draw from one generator). With
    ``return_details`` each answer also carries the probability of each of its tokens, the cross-
    and self-attention weights and each step's top candidates (see ``Answer``), for the web page."""
    if isinstance(questions, str) or not isinstance(questions, (list, tuple)):
        raise TypeError(f"questions must be a list of str, got {type(questions).__name__}")
    for q in questions:
        check_question(q)
    config = config or GenerationConfig()
    encoded = [encode_question(model, tokenizer, q, retrieval) for q in questions]
    src_ids = [ids for ids, _ in encoded]
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]))
    answers: list = [None] * len(src_ids)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            chunk_src = [src_ids[i] for i in chunk]
            results = decode_ids(model, chunk_src, config)
            details = None
            if return_details:
                device = next(model.parameters()).device
                src = pad(chunk_src, model.cfg.pad_id).to(device)                # (B, S)
                details = token_details(model, src, [ids for ids, _ in results], config)
            for j, i in enumerate(chunk):
                answers[i] = make_answer(tokenizer, src_ids[i], results[j][0], encoded[i][1])
                if details is not None:
                    (answers[i].token_probs, answers[i].cross_attention,
                     answers[i].self_attention, answers[i].steps) = details[j]
    return answers
