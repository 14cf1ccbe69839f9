"""Turning a trained Seq2Seq into answers: logits processors, greedy decoding, sampling and beam search.

How a sequence-to-sequence model answers (Sutskever et al. 2014; Vaswani et al. 2017, section 3):
the encoder reads the question once, then the decoder produces the answer one token at a time, each new
token chosen from the model's distribution over the vocabulary given the question and the tokens so far.

Three ideas make this fast and correct:
  * The encoder runs ONCE per batch, and the decoder keeps a key/value cache (``model.make_cache``): each step
    feeds only the newest token, whose self-attention reads the cached keys/values of the earlier positions,
    and whose cross-attention reads keys/values of the encoder output computed once. Without the cache every
    step re-runs the encoder and the whole decoder prefix: O(T^2) work instead of O(T). ``use_cache=False``
    keeps that slow way as the reference path, and the tests prove both give the same tokens.
  * Each row stops at its own ``<eos>`` and is then dropped from the batch (``cache.reorder``), so a finished
    answer costs nothing while the longer ones go on.
  * Questions are right-padded to a batch and the model masks the padding, so a batch gives the same answers
    as the same questions asked one at a time.

The strategies (all share the processors below):
  greedy  argmax at every step.
  sample  draw from softmax(logits / temperature) restricted by top-k and/or top-p, with a seeded
          torch.Generator so that the same seed gives the same answers.
  beam    keep the ``num_beams`` best partial answers by summed log-probability (Graves 2012; Sutskever
          et al. 2014), with a length penalty on finished ones (Wu et al. 2016).

Tensor symbols: B batch (rows still decoding), S source length, T target length, V vocabulary, K beams,
L decoder layers, H heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from minillm.data import clean_text

STRATEGIES = ("greedy", "sample", "beam")


@dataclass
class GenerationConfig:
    """How to decode. Every field is checked when the config is built, so a bad value fails early and clearly."""
    strategy: str = "greedy"           # "greedy" | "sample" | "beam"
    max_new_tokens: int = 64           # answer tokens at most, not counting <bos>/<eos>
    temperature: float = 1.0           # sample only: logits / temperature; < 1 sharper, > 1 flatter; 0 is greedy
    top_k: int = 0                     # sample only: keep the k most likely tokens (0 = off)
    top_p: float = 1.0                 # sample only: keep the smallest set with probability >= p (1.0 = off)
    num_beams: int = 4                 # beam only: beam width K; 4 is the usual trade-off (Wu et al. 2016 used 3-4)
    length_penalty: float = 1.0        # beam only: score = sum log p / length**alpha; 0 = raw sum (favours short)
    repetition_penalty: float = 1.0    # every strategy: > 1 discourages tokens already in the answer (1.0 = off)
    no_repeat_ngram_size: int = 0      # every strategy: forbid repeating any n-gram of this size (0 = off)
    seed: int | None = None            # sample only: seed of the torch.Generator; None draws a fresh seed
    use_cache: bool = True             # False: the slow reference path (full forward every step), for tests/bench
    ignore_eos: bool = False           # True: never stop at <eos>, always produce max_new_tokens (benchmarks)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"GenerationConfig.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise ValueError(f"GenerationConfig.max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        check_temperature(self.temperature)
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise ValueError(f"GenerationConfig.top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"GenerationConfig.top_p must be in (0, 1] (1.0 = off), got {self.top_p!r}")
        if not (isinstance(self.num_beams, int) and self.num_beams >= 1):
            raise ValueError(f"GenerationConfig.num_beams must be an int >= 1, got {self.num_beams!r}")
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"GenerationConfig.length_penalty must be finite, got {self.length_penalty!r}")
        if not (self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty)):
            raise ValueError("GenerationConfig.repetition_penalty must be a finite number > 0 (1.0 = off), "
                             f"got {self.repetition_penalty!r}")
        if not (isinstance(self.no_repeat_ngram_size, int) and self.no_repeat_ngram_size >= 0):
            raise ValueError("GenerationConfig.no_repeat_ngram_size must be an int >= 0 (0 = off), "
                             f"got {self.no_repeat_ngram_size!r}")


@dataclass
class Answer:
    """One generated answer. ``ids`` excludes <bos> and the final <eos>; T below is ``len(ids)``."""
    text: str
    ids: list[int]
    finished: bool = True                            # True: stopped at <eos>; False: ran into max_new_tokens
    token_probs: list[float] | None = None           # return_details: probability of each chosen token (len T)
    cross_attention: torch.Tensor | None = None      # return_details: (L, H, T, S) cross-attention weights
    src_tokens: list[str] = field(default_factory=list)  # printable source tokens: the S axis of the heatmap
    tgt_tokens: list[str] = field(default_factory=list)  # printable answer tokens: the T axis of the heatmap


# ----------------------------------------------------------------------------------------------------------
# Logits processors. Each takes logits (B, V) and returns new logits (B, V); each works row by row, so a batch
# gives the same result as its rows one at a time. A token removed from the distribution gets logit -inf, so
# a later softmax gives it probability exactly 0 and renormalises the rest.
# ----------------------------------------------------------------------------------------------------------

def check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if temperature <= 0:
        # subtle: temperature -> 0 is the limit of greedy decoding, but dividing by 0 gives inf/NaN logits.
        raise ValueError(f"temperature must be > 0, got {temperature!r}; for deterministic decoding "
                         "(the temperature -> 0 limit) use strategy='greedy' instead")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / t): t < 1 sharpens the distribution, t > 1 flattens it (Ackley et al. 1985;
    Hinton et al. 2015 use the same knob for distillation). Argmax is unchanged, so greedy ignores it."""
    check_temperature(temperature)
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k sampling (Fan et al. 2018, "Hierarchical Neural Story Generation", section 5.1): keep the k
    highest logits of each row, remove the rest. k = 0 or k >= V leaves the logits unchanged.

    subtle: with ties at the k-th value "the k best" is not unique; we keep every token whose logit equals the
    k-th largest, so the result never depends on how a sort breaks ties (a row may then keep a few more than k).
    """
    V = logits.size(-1)
    if k <= 0 or k >= V:
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]              # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration", eq. 3): keep the
    smallest set of most likely tokens whose probability reaches p; always at least the most likely token.
    p = 1.0 leaves the logits unchanged. Ties at the boundary are all kept, as in ``top_k_filter``.

    The seed code applied the cut-off computed on sorted rows to the wrong rows of a batch; here every step is
    per row: the row's own threshold logit is gathered and compared with the row's own logits.
    """
    if p >= 1.0:
        return logits
    sorted_logits = torch.sort(logits, dim=-1, descending=True).values      # (B, V)
    cum_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)               # (B, V), non-decreasing
    # Tokens needed = 1 + how many sorted prefixes still fall short of p. cum_probs is non-decreasing (a sum of
    # non-negative terms), so counting "cum < p" gives the index of the first prefix that reaches p.
    n_keep = (cum_probs < p).sum(dim=-1, keepdim=True) + 1                 # (B, 1), >= 1: keeps the argmax
    # subtle: rounding can leave cum_probs[-1] a hair below p, which would ask for V + 1 tokens.
    n_keep = n_keep.clamp(max=logits.size(-1))
    threshold = sorted_logits.gather(-1, n_keep - 1)                       # (B, 1): the last kept logit
    return logits.masked_fill(logits < threshold, float("-inf"))


def apply_repetition_penalty(logits: torch.Tensor, prev_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019, section 4.1): make every token that already occurs in
    ``prev_ids`` (B, T) less likely. Keskar et al. divide the logit by the penalty; that only lowers a POSITIVE
    logit, so a negative logit is multiplied instead (as Hugging Face does) -- both move it towards -inf."""
    if penalty == 1.0:
        return logits
    seen = logits.gather(-1, prev_ids)                                       # (B, T): logits of seen tokens
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    # subtle: a token seen twice appears twice in prev_ids; scatter writes the same value twice, which is fine,
    # and the penalty is applied once, not once per occurrence.
    return logits.scatter(-1, prev_ids, seen)


def no_repeat_ngram_filter(logits: torch.Tensor, prev_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid any token that would complete an n-gram already present in ``prev_ids`` (B, T) (Paulus et al. 2018,
    "A Deep Reinforced Model for Abstractive Summarization", section 2.5, used there for beam search with n=3).
    n = 0 leaves the logits unchanged."""
    B, T = prev_ids.shape
    if n <= 0 or T < n:
        return logits
    if n == 1:
        # Every token seen once is banned outright.
        return logits.scatter(-1, prev_ids, float("-inf"))
    windows = prev_ids.unfold(1, n, 1)                                       # (B, W, n), W = T - n + 1 n-grams
    prefix = prev_ids[:, T - n + 1:]                                          # (B, n-1): the newest n-1 tokens
    matches = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(dim=-1)        # (B, W): n-gram starts like prefix
    banned = torch.zeros_like(logits, dtype=torch.int32)                     # (B, V)
    # scatter_add (not scatter) because two n-grams can end in the same token, one matching and one not.
    banned.scatter_add_(1, windows[:, :, -1], matches.to(torch.int32))
    return logits.masked_fill(banned > 0, float("-inf"))


def never_generated(vocab_size: int, ids: tuple[int, ...], device) -> torch.Tensor:
    """(V,) additive row: -inf at ``ids`` (<pad>, <bos>: never valid answer tokens), 0 elsewhere."""
    row = torch.zeros(vocab_size, device=device)
    row[list(ids)] = float("-inf")
    return row


def process_logits(logits: torch.Tensor, prev_ids: torch.Tensor, gcfg: GenerationConfig,
                   never: torch.Tensor) -> torch.Tensor:
    """All processors of ``gcfg`` in the usual order (penalties first, then temperature, top-k, top-p, as
    Hugging Face's generate does), after adding ``never`` (see ``never_generated``).
    Temperature, top-k and top-p only change sampling: they never remove or demote the argmax, so greedy and
    beam search skip them (beam search scores with the model's own log-probabilities).
    Each processor that is off costs nothing: on the greedy hot path this is one addition over (B, V)."""
    logits = logits + never                                                   # (B, V) + (V,): a new tensor
    logits = apply_repetition_penalty(logits, prev_ids, gcfg.repetition_penalty)
    logits = no_repeat_ngram_filter(logits, prev_ids, gcfg.no_repeat_ngram_size)
    if gcfg.strategy == "sample":
        logits = apply_temperature(logits, gcfg.temperature)
        logits = top_k_filter(logits, gcfg.top_k)
        logits = top_p_filter(logits, gcfg.top_p)
    return logits


def check_finite(logits: torch.Tensor, step: int) -> None:
    """Fail loudly on NaN/inf logits: sampling from them would silently return garbage (multinomial on NaN
    probabilities picks arbitrary tokens or raises a cryptic error deep inside torch).

    subtle: one pass over (B, V) instead of isfinite(), which costs several: a row's SUM is finite exactly when
    every entry is (NaN and +-inf propagate), except that finite logits beyond ~1e34 would overflow it -- no
    working model produces those, and we would rather call them corrupt too."""
    row_ok = torch.isfinite(logits.sum(dim=-1))                               # (B,)
    if not bool(row_ok.all()):
        rows = (~row_ok).nonzero().flatten().tolist()
        raise FloatingPointError(
            f"the model produced non-finite logits (NaN or inf) at decoding step {step} for batch rows {rows}; "
            "the checkpoint's weights are probably corrupt (a diverged training run?)")


def check_not_empty(logits: torch.Tensor, step: int) -> None:
    """After the processors every row must keep at least one token (no_repeat_ngram_size can ban them all)."""
    empty = torch.isneginf(logits).all(dim=-1)                               # (B,)
    if empty.any():
        raise ValueError(
            f"every token was ruled out at decoding step {step} for batch rows "
            f"{empty.nonzero().flatten().tolist()}; no_repeat_ngram_size is too small for this vocabulary")


# ----------------------------------------------------------------------------------------------------------
# Plumbing shared by the strategies
# ----------------------------------------------------------------------------------------------------------

@dataclass
class _Special:
    """The model's special token ids (from its config), gathered once."""
    pad: int
    bos: int
    eos: int


def _special_ids(model) -> _Special:
    cfg = model.cfg
    return _Special(pad=cfg.pad_id, bos=cfg.bos_id, eos=cfg.eos_id)


def pad_source(src_ids: list[list[int]], pad_id: int, device) -> torch.Tensor:
    """Right-pad token id lists to one (B, S) LongTensor; the model masks the padding (True = real token)."""
    if not src_ids or any(len(ids) == 0 for ids in src_ids):
        raise ValueError("every source must have at least one token (got an empty question?)")
    S = max(len(ids) for ids in src_ids)
    out = torch.full((len(src_ids), S), pad_id, dtype=torch.long)
    for i, ids in enumerate(src_ids):
        out[i, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return out.to(device)


class _Decoder:
    """One decoding step for the rows still running, with or without the KV cache.

    cached:    the encoder ran once; each step feeds only the newest token (B, 1) to ``model.decode_step``.
    reference: no cache; each step re-runs ``model(src_ids, all tokens so far)`` and keeps the last position,
               exactly what the seed code did (and what the tests compare the cached path with).
    ``keep(index)`` drops/duplicates/reorders rows (beams, finished rows) in whichever state is held.
    """

    def __init__(self, model, src: torch.Tensor, use_cache: bool):
        self.model, self.src, self.use_cache = model, src, use_cache
        if use_cache:
            enc_out, src_mask = model.encode(src)                            # (B, S, C), (B, S): run ONCE
            self.cache = model.make_cache(enc_out, src_mask)                 # cross-attn K/V computed once too

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, t) every token so far, <bos> first. Returns the next-token logits (B, V) in fp32."""
        if self.use_cache:
            logits = self.model.decode_step(tokens[:, -1:], self.cache)       # (B, 1, V): only the new token
        else:
            logits = self.model(self.src, tokens)                             # (B, t, V): everything again
        return logits[:, -1, :].float()                                       # (B, V)

    def keep(self, index: torch.Tensor) -> None:
        if self.use_cache:
            self.cache.reorder(index)                                        # index_select on every cached tensor
        else:
            self.src = self.src.index_select(0, index)


# ----------------------------------------------------------------------------------------------------------
# Greedy decoding and sampling: one token per row per step
# ----------------------------------------------------------------------------------------------------------

def _greedy_or_sample(model, src: torch.Tensor, gcfg: GenerationConfig, sp: _Special):
    """Returns, for each source row, (answer ids without <bos>/<eos>, finished at <eos>)."""
    B = src.size(0)
    dec = _Decoder(model, src, gcfg.use_cache)
    generator = None
    if gcfg.strategy == "sample":
        # A generator of our own: a seed gives the same answers every time, and sampling never moves the
        # global RNG that training (dropout, shuffling) relies on. seed=None draws a fresh, random seed.
        generator = torch.Generator(device=src.device)
        if gcfg.seed is None:
            generator.seed()
        else:
            generator.manual_seed(gcfg.seed)
    # One preallocated buffer for every row's tokens (B, 1 + max_new): no torch.cat per step.
    tokens = torch.full((B, 1 + gcfg.max_new_tokens), sp.pad, dtype=torch.long, device=src.device)
    tokens[:, 0] = sp.bos
    rows = list(range(B))                           # original row index of each row still decoding
    results: list = [None] * B
    never = None
    for t in range(gcfg.max_new_tokens):
        logits = dec.step(tokens[:, :t + 1])                                  # (B, V)
        check_finite(logits, t)
        if never is None:
            never = never_generated(logits.size(-1), (sp.pad, sp.bos), logits.device)
        logits = process_logits(logits, tokens[:, :t + 1], gcfg, never)
        if gcfg.no_repeat_ngram_size:                 # the only processor that can rule out every token
            check_not_empty(logits, t)
        if gcfg.strategy == "greedy":
            next_ids = logits.argmax(dim=-1)                                  # (B,)
        else:
            probs = logits.softmax(dim=-1)                                    # (B, V), filtered tokens have 0
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(1)   # (B,)
        tokens[:, t + 1] = next_ids
        done = torch.zeros_like(next_ids, dtype=torch.bool) if gcfg.ignore_eos else next_ids == sp.eos
        if t == gcfg.max_new_tokens - 1:
            done = torch.ones_like(done)
        if done.any():
            for i in done.nonzero().flatten().tolist():
                ids = tokens[i, 1:t + 2].tolist()
                finished = bool(next_ids[i] == sp.eos) and not gcfg.ignore_eos
                results[rows[i]] = (ids[:-1] if finished else ids, finished)
            keep = (~done).nonzero().flatten()                                # (B',)
            if keep.numel() == 0:
                break
            # Finished rows leave the batch: the next steps neither compute nor cache anything for them.
            dec.keep(keep)
            tokens = tokens.index_select(0, keep)
            rows = [rows[i] for i in keep.tolist()]
    return results


# ----------------------------------------------------------------------------------------------------------
# Beam search
# ----------------------------------------------------------------------------------------------------------

def _length_normalised(score: float, length: int, alpha: float) -> float:
    """Score of a finished hypothesis: sum of log-probabilities / length**alpha, with length counting every
    answer token and the <eos>. This is Hugging Face's form; Wu et al. 2016 (GNMT, eq. 14) divide by
    ((5 + length) / 6)**alpha instead -- same idea: without it beam search prefers short answers, because every
    extra token adds a negative log-probability. alpha = 0 ranks by the raw sum."""
    return score / (length ** alpha)


def _add_hypothesis(hyps: list, K: int, score: float, ids: list[int], finished: bool) -> None:
    """Keep the K best finished hypotheses of one question, best first."""
    hyps.append((score, ids, finished))
    hyps.sort(key=lambda h: -h[0])
    del hyps[K:]


def _beam_search(model, src: torch.Tensor, gcfg: GenerationConfig, sp: _Special):
    """Beam search (Graves 2012, "Sequence Transduction with RNNs", section 3.2; Sutskever et al. 2014).

    Each question keeps K beams, the K best partial answers by summed log-probability. Every step scores all
    K*V one-token extensions and takes the 2K best (at most K of them end in <eos>, so at least K go on):
      * an extension ending in <eos> that ranks among the K best becomes a finished hypothesis, scored by
        ``_length_normalised``; each question keeps its K best finished hypotheses. (The rank condition is
        Hugging Face's; it makes width 1 exactly greedy decoding.)
      * the K best extensions not ending in <eos> become the next beams, and the KV cache is reordered with
        them (``cache.reorder``): beam k of the next step may continue beam j of this one.
    A question is done when no running beam can still beat its K-th finished hypothesis. Log-probabilities are
    <= 0, so a running beam's sum only falls; with alpha > 0 its normalised score is at best sum / max_len**alpha
    (the longest it may grow), with alpha <= 0 at best sum / (length + 1)**alpha. This bound is exact (what
    Hugging Face calls early_stopping="never"); HF's default stops sooner, on a heuristic that can miss a
    better, longer answer. At max_new_tokens the running beams become hypotheses too, without <eos>.
    """
    B, K, max_new, alpha = src.size(0), gcfg.num_beams, gcfg.max_new_tokens, gcfg.length_penalty
    device = src.device
    dec = _Decoder(model, src, gcfg.use_cache)
    dec.keep(torch.arange(B, device=device).repeat_interleave(K))           # (B*K): K copies of each question
    tokens = torch.full((B * K, 1 + max_new), sp.pad, dtype=torch.long, device=device)
    tokens[:, 0] = sp.bos
    # subtle: at the start all K beams are the same "<bos>"; if all were live, the first step would pick the
    # same token K times. Only beam 0 starts live; the others start at -inf and are replaced at once.
    beam_scores = torch.full((B, K), float("-inf"), device=device)          # (B, K) summed log-probabilities
    beam_scores[:, 0] = 0.0
    items = list(range(B))                # original question index of each question still searching
    hyps: list[list] = [[] for _ in range(B)]
    rank = torch.arange(2 * K, device=device)                                # (2K,)
    never = None
    for t in range(max_new):
        nB = len(items)
        logits = dec.step(tokens[:, :t + 1])                                 # (nB*K, V)
        check_finite(logits, t)
        if never is None:
            never = never_generated(logits.size(-1), (sp.pad, sp.bos), logits.device)
        logits = process_logits(logits, tokens[:, :t + 1], gcfg, never)
        if gcfg.no_repeat_ngram_size:
            check_not_empty(logits, t)
        V = logits.size(-1)
        log_probs = logits.log_softmax(dim=-1)                               # (nB*K, V)
        cand = (beam_scores.view(-1, 1) + log_probs).view(nB, K * V)         # (nB, K*V) every extension
        top_scores, top_idx = cand.topk(2 * K, dim=-1)                       # (nB, 2K), best first
        beam_of, tok = top_idx // V, top_idx % V                             # (nB, 2K) source beam, new token
        is_eos = (tok == sp.eos) & (not gcfg.ignore_eos)                     # (nB, 2K)
        # Finished hypotheses: <eos> extensions among the K best. Few per step, so a Python loop is fine.
        new_hyp = is_eos & (rank < K) & torch.isfinite(top_scores)
        for b, j in new_hyp.nonzero().tolist():
            row = b * K + int(beam_of[b, j])
            score = _length_normalised(float(top_scores[b, j]), t + 1, alpha)
            _add_hypothesis(hyps[items[b]], K, score, tokens[row, 1:t + 1].tolist(), True)
        # Next beams: the K best extensions that do not end in <eos>, in rank order (eos ones sorted last).
        order = (is_eos.long() * 2 * K + rank).argsort(dim=-1)[:, :K]        # (nB, K) positions in the 2K
        beam_scores = top_scores.gather(1, order)                             # (nB, K)
        next_tok = tok.gather(1, order)                                       # (nB, K)
        src_rows = (torch.arange(nB, device=device) * K).unsqueeze(1) + beam_of.gather(1, order)  # (nB, K)
        if t == max_new - 1:                      # out of room: the running beams become hypotheses as they are
            for b in range(nB):
                for k in range(K):
                    if math.isfinite(float(beam_scores[b, k])):
                        ids = tokens[int(src_rows[b, k]), 1:t + 1].tolist() + [int(next_tok[b, k])]
                        score = _length_normalised(float(beam_scores[b, k]), max_new, alpha)
                        _add_hypothesis(hyps[items[b]], K, score, ids, False)
            break
        # Which questions are done? (see the docstring for the bound)
        best_running = beam_scores.max(dim=1).values.tolist()                # (nB,)
        denominator = max_new ** alpha if alpha > 0 else (t + 2) ** alpha
        keep_items = []
        for b in range(nB):
            h = hyps[items[b]]
            done = best_running[b] == float("-inf") or (
                len(h) >= K and h[-1][0] >= best_running[b] / denominator)
            if not done:
                keep_items.append(b)
        if not keep_items:
            break
        keep = torch.as_tensor(keep_items, device=device)
        # One index_select does both jobs: follow each beam's source beam, and drop the finished questions.
        rows = src_rows.index_select(0, keep).flatten()                      # (nB'*K,)
        dec.keep(rows)
        tokens = tokens.index_select(0, rows)
        tokens[:, t + 1] = next_tok.index_select(0, keep).flatten()
        beam_scores = beam_scores.index_select(0, keep)
        items = [items[b] for b in keep_items]
    return [(h[0][1], h[0][2]) for h in hyps]


# ----------------------------------------------------------------------------------------------------------
# Details for the GUI: probability of each chosen token and the cross-attention weights
# ----------------------------------------------------------------------------------------------------------

def token_details(model, src: torch.Tensor, answers: list[list[int]], gcfg: GenerationConfig):
    """Teacher-forces each answer through the decoder once (all positions in one ``decode_step`` call) and
    returns, per row, (probabilities of the answer's tokens, cross-attention (L, H, T, S_real)).

    The probability is that of the distribution the strategy chose from: the model's softmax after the same
    processors (so after temperature/top-k/top-p when sampling). Recomputing here, instead of recording during
    the search, keeps the decoding loops lean and gives beam search its details for free (a beam's history
    is reshuffled at every step)."""
    sp = _special_ids(model)
    B = src.size(0)
    T = max(1, max(len(a) for a in answers))
    hist = torch.full((B, T + 1), sp.pad, dtype=torch.long, device=src.device)  # <bos> + answer, padded
    hist[:, 0] = sp.bos
    for i, ids in enumerate(answers):
        hist[i, 1:len(ids) + 1] = torch.as_tensor(ids, dtype=torch.long)
    enc_out, src_mask = model.encode(src)                                     # (B, S, C), (B, S)
    cache = model.make_cache(enc_out, src_mask)
    # subtle: padding after a short answer is harmless: causal self-attention never lets an earlier position
    # see a later one, and we read only each row's own positions.
    logits, cross = model.decode_step(hist[:, :T], cache, need_weights=True)  # (B, T, V), L x (B, H, T, S)
    cross = torch.stack(cross, dim=1)                                         # (B, L, H, T, S)
    probs = torch.empty(B, T, device=src.device)
    never = never_generated(logits.size(-1), (sp.pad, sp.bos), src.device)
    for t in range(T):
        step_logits = process_logits(logits[:, t, :].float(), hist[:, :t + 1], gcfg, never)
        probs[:, t] = step_logits.softmax(dim=-1).gather(1, hist[:, t + 1:t + 2]).squeeze(1)
    src_len = src_mask.sum(dim=1).tolist()                                    # real source tokens per row
    return [(probs[i, :len(a)].tolist(), cross[i, :, :, :len(a), :src_len[i]].float().cpu())
            for i, a in enumerate(answers)]


# ----------------------------------------------------------------------------------------------------------
# The entry points
# ----------------------------------------------------------------------------------------------------------

@torch.inference_mode()
def decode_ids(model, src_ids: list[list[int]], gcfg: GenerationConfig) -> list[tuple[list[int], bool]]:
    """Generate for already tokenised sources. Returns, per source, (answer ids without <bos>/<eos>, whether
    it ended at <eos>). The model must be in eval mode (``generate`` sees to that)."""
    if gcfg.max_new_tokens > model.cfg.max_len:
        # The decoder reads <bos> + all but the last answer token: max_new_tokens positions in all.
        raise ValueError(f"max_new_tokens = {gcfg.max_new_tokens} needs more decoder positions than the model "
                         f"has (max_len = {model.cfg.max_len})")
    device = next(model.parameters()).device
    sp = _special_ids(model)
    src = pad_source(src_ids, sp.pad, device)                                 # (B, S)
    if gcfg.strategy == "beam":
        return _beam_search(model, src, gcfg, sp)
    return _greedy_or_sample(model, src, gcfg, sp)


def encode_question(tokenizer, question: str, max_len: int) -> list[int]:
    """The encoder input as training built it (minillm.data.Seq2SeqDataset): the question cleaned by
    data.clean_text (NFC, the dotted-i fix, whitespace), as training data is, then ids + [<eos>], cut to the
    model's max_len positions (the <eos> is kept).

    subtle: without the cleaning, a question typed on a system that sends NFD (decomposed) letters, or
    lowercased with Python's "İ".lower(), became ids the model never saw in training (an NFD question: 23
    tokens instead of 14).
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"each question must be a non-empty string, got {question!r}")
    return tokenizer.encode(clean_text(question))[:max_len - 1] + [tokenizer.eos_id]


@torch.inference_mode()
def generate(model, tokenizer, questions: list[str], gcfg: GenerationConfig | None = None,
             return_details: bool = False, batch_size: int = 32) -> list[Answer]:
    """Answer each question; returns one ``Answer`` per question, in order.

    Questions are decoded ``batch_size`` at a time, sorted by length so that a batch carries little padding
    (greedy and beam answers do not depend on the batching; sampled ones depend on the seed AND on which
    questions share a batch, since the rows draw from one generator). With ``return_details`` each answer also carries the
    probability of each of its tokens and the cross-attention weights (L, H, T, S), for the web page."""
    if isinstance(questions, str) or not isinstance(questions, (list, tuple)):
        raise TypeError(f"questions must be a list of str, got {type(questions).__name__}")
    gcfg = gcfg or GenerationConfig()
    src_ids = [encode_question(tokenizer, q, model.cfg.max_len) for q in questions]
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]))
    answers: list = [None] * len(src_ids)
    was_training = model.training
    model.eval()                                   # dropout off; restored below (the trainer generates mid-run)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            chunk_src = [src_ids[i] for i in chunk]
            results = decode_ids(model, chunk_src, gcfg)
            details = None
            if return_details:
                device = next(model.parameters()).device
                src = pad_source(chunk_src, model.cfg.pad_id, device)
                details = token_details(model, src, [ids for ids, _ in results], gcfg)
            for j, i in enumerate(chunk):
                ids, finished = results[j]
                answer = Answer(text=tokenizer.decode(ids), ids=ids, finished=finished,
                                src_tokens=[tokenizer.id_to_token_str(x) for x in src_ids[i]],
                                tgt_tokens=[tokenizer.id_to_token_str(x) for x in ids])
                if details is not None:
                    answer.token_probs, answer.cross_attention = details[j]
                answers[i] = answer
    finally:
        model.train(was_training)
    return answers
