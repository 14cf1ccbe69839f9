"""Copying from the source: the pointer-generator head (See et al. 2017), for a model that reads
the law.

A decoder writes each token from its vocabulary: logits = h · Eᵀ. To repeat a word of the source
(an article number, a phrase of the law) it must learn, through attention, to put that word's
embedding into h -- slowly, one word at a time, from thousands of examples, and never for a word the
training answers did not use. The pointer-generator gives it a second way: point at a source
position and copy the token there. At every target position t, with y_t the token fed there (the
one just written; <bos> first):

    s_t,i  = (h_t W_q) · (enc_out_i W_k) / √C       how well source position i fits
           + f · [src_{i-1} = y_t]                  follow-on: go on after the copy just made
           + r · [src_i = y_t]                      stay (r < 0): not the same token again
           - c · Σ_{t' < t} a⁰_t',i                 coverage: not where it already pointed
    a_t    = softmax_S(s_t)                         where to copy from       (B, T, S)
    p_gen  = σ(h_t · w_g + b_g)                     write (1) or copy (0)    (B, T, 1)
    p(w)   = p_gen · softmax(logits)_w  +  (1 - p_gen) · Σ_{i: src_i = w} a_t,i
                                                                             (B, T, V)

See et al. 2017, eq. 8-9 ("Get To The Point"); coverage is their §2.3. Departures: the copy
attention is its own single head on the decoder's final state (See et al. reuse the decoder's
attention); p_gen reads h_t alone (they also feed the context vector and the input; h_t has already
attended to the source); coverage sums a⁰, the weights before the coverage term (so that the whole
answer can be scored in one pass during training), and enters the score with a learned weight c
instead of a coverage loss; f and r are this project's: with a few hundred training answers, a
model without them copied one word and then jumped or repeated (bench/README.md).

The head returns log p(w), not logits. Everything downstream still works:
log_softmax(log p) = log p, so the loss is unchanged, and softmax(log p) = p, so greedy, sampling,
top-k/top-p and beam search draw from p.

Shape symbols: B batch, S source length, T target length, C model width, V vocabulary.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor
# The head's priors, each a learned parameter's starting value, in score units (a score q·k/√C
# has a spread of about 1 at init). Measured on make train's task (bench/README.md): copying starts
# as the likelier choice and as a run along the source, and learning refines both.
GATE_BIAS_INIT = -3.0  # p_gen = σ(-3) = 0.05 at first: copy unless writing learns to be better
FOLLOW_INIT = 6.0      # go on after the token just written rather than jump elsewhere in the source
STAY_INIT = -2.0       # not again at a copy of the token just written ("ilgili ilgili ilgili")
COVER_INIT = 2.0       # not again where the head already pointed (coverage, See et al. §2.3)


class CopyHead(nn.Module):
    """Mixes the decoder's vocabulary distribution with a copy distribution over the source
    tokens."""

    def __init__(self, d_model: int):
        super().__init__()
        self.q_proj = nn.Linear(d_model, d_model, bias=False)  # what the target position looks for
        self.k_proj = nn.Linear(d_model, d_model, bias=False)  # what each source position offers
        self.gate = nn.Linear(d_model, 1)                       # p_gen's logit
        self.scale = 1.0 / math.sqrt(d_model)
        # "Go on copying": a learned bonus for the source position right after a copy of the
        # token just written.
        self.follow = nn.Parameter(torch.tensor(FOLLOW_INIT))
        # "Do not stay": a learned penalty for the positions holding the token just written.
        self.stay = nn.Parameter(torch.tensor(STAY_INIT))
        # Coverage (See et al. 2017, §2.3): a learned penalty for positions already pointed at.
        self.cover = nn.Parameter(torch.tensor(COVER_INIT))
        self.reset_priors()

    @torch.no_grad()
    def reset_priors(self) -> None:
        """Put the priors at their starting values. subtle: Seq2Seq._init_weights zeroes every
        Linear's bias, the gate's too, so it calls this after its own initialisation."""
        self.gate.bias.fill_(GATE_BIAS_INIT)
        self.follow.fill_(FOLLOW_INIT)
        self.stay.fill_(STAY_INIT)
        self.cover.fill_(COVER_INIT)

    def keys(self, enc_out: Tensor) -> Tensor:
        """(B, S, C) copy keys of the source: computed once per source, like cross-attention's
        (make_cache)."""
        return self.k_proj(enc_out)

    def copy_weights(self, h: Tensor, keys: Tensor, src_mask: Tensor, src_ids: Tensor,
                     tgt_ids: Tensor, covered: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(a (B, T, S), covered (B, S)): for each target position, a distribution over the real
        source positions, and the coverage after these positions: s_t,i and a_t of the module
        docstring. tgt_ids (B, T): the token fed at each target position (the one just written;
        <bos> first); covered: the coverage before them (None = nothing yet; decode_step keeps it in
        the cache between steps)."""
        # (B, T, C) @ (B, C, S) -> (B, T, S)
        scores = self.q_proj(h) @ keys.transpose(1, 2) * self.scale
        # follow-on: source position i gets +follow when the token before it, src_{i-1}, is the
        # token just written, so that having copied "temel hak" the head looks at what comes after
        # it in the source.
        before = F.pad(src_ids, (1, -1), value=-1)            # (B, S): src_{i-1}; none at i = 0
        scores = scores + self.follow * (tgt_ids[:, :, None] == before[:, None, :])   # (B, T, S)
        scores = scores + self.stay * (tgt_ids[:, :, None] == src_ids[:, None, :])    # (B, T, S)
        # padding is never copied
        scores = scores.masked_fill(~src_mask[:, None, :], float("-inf"))
        first = scores.softmax(dim=-1)                        # (B, T, S) before coverage
        # coverage: how much the EARLIER target positions pointed at each one (exclusive cumsum)
        before_t = first.cumsum(dim=1) - first                # (B, T, S)
        if covered is not None:
            before_t = before_t + covered[:, None, :]
        a = (scores - self.cover * before_t).softmax(dim=-1)  # (B, T, S)
        return a, before_t[:, -1] + first[:, -1]

    def forward(self, h: Tensor, logits: Tensor, keys: Tensor, src_ids: Tensor, src_mask: Tensor,
                tgt_ids: Tensor, covered: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """h (B, T, C) decoder states, logits (B, T, V), keys (B, S, C), src_ids (B, S), src_mask
        (B, S), tgt_ids (B, T) the tokens fed, covered (B, S) or None -> (log p (B, T, V), the
        mixture above; the coverage after these positions (B, S)). Computed in float32: bf16 keeps 8
        bits of mantissa, too few for 1 - p_gen and for sums of many small weights."""
        # float32 even under bf16 autocast
        with torch.autocast(h.device.type, enabled=False):
            h = h.float()
            logits = logits.float()
            keys = keys.float()
            # (B, T, S), (B, S)
            a, covered = self.copy_weights(h, keys, src_mask, src_ids, tgt_ids, covered)
            B, T, S = a.shape
            # Σ over source positions holding token w: add each position's weight into the column
            # of its token.
            index = src_ids[:, None, :].expand(B, T, S)                       # (B, T, S)
            copy = torch.zeros_like(logits).scatter_add_(2, index, a)         # (B, T, V)
            p_gen = torch.sigmoid(self.gate(h))                               # (B, T, 1)
            # (B, T, V), each row sums to 1
            p = p_gen * F.softmax(logits, dim=-1) + (1 - p_gen) * copy
        # subtle: a probability can underflow to exactly 0, and log(0) = -inf has an infinite
        # gradient; the floor keeps every value finite (clamp passes no gradient below it) and moves
        # nothing that matters.
        return p.clamp_min(1e-30).log(), covered
