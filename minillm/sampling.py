"""Greedy decoding and sampling, one token at a time, over the decoder's key/value cache.

  * The decoder keeps a key/value cache (``model.make_cache``): each step feeds only the newest
    token, whose self-attention reads the cached keys/values of the earlier positions and whose
    cross-attention reads the encoder output's keys/values, computed once. Without it every step
    re-runs the encoder and the whole prefix: O(T^2) work instead of O(T). ``use_cache=False``
    keeps that slow way as the reference path.
  * Each row stops at its own ``<eos>`` and leaves the batch (``cache.reorder``); padding is
    masked, so a batch gives the same answers as its questions asked one at a time.
``StepDecoder`` is the step every strategy shares (beam search in minillm.beam uses it too):
the next-token logits, checked and processed (minillm.decoding).

Tensor symbols: B batch (rows still decoding), S source length, T target length, V vocabulary.
"""
from __future__ import annotations

import sys
from typing import NamedTuple

import torch

from minillm.decoding import (GenerationConfig, check_finite, check_not_empty, process_logits,
                              special_token_ban)
from minillm.staticstep import StaticStep


class SpecialIds(NamedTuple):
    """The model's special token ids (from its config), gathered once."""
    pad: int
    bos: int
    eos: int


def special_ids(model) -> SpecialIds:
    return SpecialIds(pad=model.cfg.pad_id, bos=model.cfg.bos_id, eos=model.cfg.eos_id)


class StepDecoder:
    """One decoding step for the rows still running, in one of three ways:

    cached:    the encoder ran once; each step feeds only the newest token (B, 1) to
               ``model.decode_step``.
    static:    ``config.compile``: the same step over fixed shapes (minillm.staticstep), compiled;
               the rows stay in the batch until the last one finishes (``static`` is set).
    reference: no cache; each step re-runs ``model(src_ids, all tokens so far)``: the plain O(T^2)
               way.
    ``keep(index)`` drops, duplicates or reorders rows (beams, finished rows) in whichever state
    is held.
    """

    def __init__(self, model, src: torch.Tensor, config: GenerationConfig):
        self.model, self.src, self.config = model, src, config
        self.use_cache = config.use_cache
        special = special_ids(model)
        # <pad> and <bos> are never valid answer tokens: -inf added to their logits at every step.
        self.ban = special_token_ban(model.cfg.vocab_size, (special.pad, special.bos), src.device)
        self.static = None
        if self.use_cache and config.compile:
            self.static = StaticStep(model, src, config.max_new_tokens, compile=True)
        elif self.use_cache:
            self.start_cache()

    def start_cache(self) -> None:
        enc_out, src_mask = self.model.encode(self.src)                 # (B, S, C), (B, S): ONCE
        self.cache = self.model.make_cache(enc_out, src_mask, self.src)  # cross-attn K/V too

    def static_step(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """The compiled step's logits (B, V); None, after one line on stderr, when compiling
        fails at the first step (no C++ compiler, say): the eager cache takes over."""
        position = torch.tensor(tokens.size(1) - 1, device=tokens.device)
        if tokens.size(1) > 1:
            return self.static.step(tokens[:, -1:], position)
        try:
            return self.static.step(tokens[:, -1:], position)
        except Exception as err:          # torch.compile fails in many ways; all mean: go eager
            reason = " ".join(str(err).split())[:160]
            print(f"minillm: torch.compile failed ({type(err).__name__}: {reason}); decoding "
                  "without it", file=sys.stderr)
            self.static = None
            self.start_cache()
            return None

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, t) every token so far, <bos> first. Returns the next-token logits (B, V) in
        fp32, as the model gives them."""
        if self.static is not None:
            logits = self.static_step(tokens)
            if logits is not None:
                return logits
        if self.use_cache:
            logits = self.model.decode_step(tokens[:, -1:], self.cache)  # (B, 1, V): the new token
        else:
            logits = self.model(self.src, tokens)                        # (B, t, V): all again
        return logits[:, -1, :].float()                                  # (B, V)

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """``step``, checked for NaN/inf, then every processor of the config: what a strategy picks
        from. tokens: (B, t) every token so far; returns (B, V)."""
        t = tokens.size(1) - 1                                           # the decoding step
        logits = self.step(tokens)                                       # (B, V)
        check_finite(logits, t)
        logits = process_logits(logits, tokens, self.config, self.ban)
        if self.config.no_repeat_ngram_size:   # the only processor that can rule out every token
            check_not_empty(logits, t)
        return logits

    def keep(self, index: torch.Tensor) -> None:
        if self.static is not None:
            self.static.keep(index)                         # in place: the row count stays
        elif self.use_cache:
            self.cache.reorder(index)                       # index_select on every cached tensor
        else:
            self.src = self.src.index_select(0, index)


def make_generator(config: GenerationConfig, device) -> torch.Generator | None:
    """Sampling's own random generator; None for the other strategies.

    A generator of our own: a seed gives the same answers every time, and sampling never moves the
    global RNG that training (dropout, shuffling) relies on. seed=None draws a fresh, random
    seed."""
    if config.strategy != "sample":
        return None
    generator = torch.Generator(device=device)
    if config.seed is None:
        generator.seed()
    else:
        generator.manual_seed(config.seed)
    return generator


def pick(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The next token of each row (B,): the argmax (greedy), or a draw from the softmax (sample)."""
    if generator is None:
        return logits.argmax(dim=-1)                                     # (B,)
    probs = logits.softmax(dim=-1)                                       # (B, V), filtered: 0
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)   # (B,)


def record_finished(results: list, rows: list[int], tokens: torch.Tensor, next_ids: torch.Tensor,
                    done: torch.Tensor, t: int, eos: int, ignore_eos: bool) -> None:
    """Store (answer ids, ended at <eos>) of every row that finished at step t."""
    for i in done.nonzero().flatten().tolist():
        ids = tokens[i, 1:t + 2].tolist()
        finished = bool(next_ids[i] == eos) and not ignore_eos
        results[rows[i]] = (ids[:-1] if finished else ids, finished)


def greedy_or_sample(model, src: torch.Tensor, config: GenerationConfig, on_token=None):
    """src: (B, S) padded source ids. Returns, per row, (answer ids without <bos>/<eos>, finished
    at <eos>). ``on_token(rows, next_ids)``, when given, sees each step's new ids (B,) and their
    rows' indices (streaming)."""
    special = special_ids(model)
    B = src.size(0)
    decoder = StepDecoder(model, src, config)
    generator = make_generator(config, src.device)
    # One preallocated buffer for every row's tokens (B, 1 + max_new): no torch.cat per step.
    tokens = torch.full((B, 1 + config.max_new_tokens), special.pad, dtype=torch.long,
                        device=src.device)
    tokens[:, 0] = special.bos
    rows = list(range(B))                     # original row index of each row still decoding
    alive = torch.ones(B, dtype=torch.bool, device=src.device)   # (B,): not finished yet
    results: list = [None] * B
    for t in range(config.max_new_tokens):
        next_ids = pick(decoder.next_logits(tokens[:, :t + 1]), generator)   # (B,)
        tokens[:, t + 1] = next_ids
        if on_token is not None:
            on_token(rows, next_ids)
        if config.ignore_eos:
            done = torch.zeros_like(next_ids, dtype=torch.bool)
        else:
            done = next_ids == special.eos
        done = (done | (t == config.max_new_tokens - 1)) & alive   # (B,): the last step ends all
        if not done.any():
            continue
        record_finished(results, rows, tokens, next_ids, done, t, special.eos, config.ignore_eos)
        alive = alive & ~done
        if not alive.any():
            break
        if decoder.static is None:
            # Finished rows leave the batch: the next steps neither compute nor cache anything for
            # them. (The static step keeps its shapes: its finished rows ride along, unrecorded.)
            keep = alive.nonzero().flatten()                                 # (B',)
            decoder.keep(keep)
            tokens = tokens.index_select(0, keep)
            rows = [rows[i] for i in keep.tolist()]
            alive = alive.index_select(0, keep)
    return results
