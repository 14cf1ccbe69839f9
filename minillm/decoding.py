"""Decoding's settings and its logits processors: what may be asked of a decoder, and how each
step's distribution over the vocabulary is reshaped before a token is chosen.

How a sequence-to-sequence model answers (Sutskever et al. 2014; Vaswani et al. 2017, section 3):
the encoder reads the question once, then the decoder produces the answer one token at a time,
each new token chosen from the model's distribution over the vocabulary given the question and the
tokens so far. This module holds what every strategy shares:
  * ``GenerationConfig``: the strategy and its knobs, each checked against ONE table of bounds;
  * the logits processors (temperature, top-k, top-p, repetition penalty, no-repeat n-grams),
    each a function from logits (B, V) to logits (B, V), and ``process_logits``, which applies
    them in order;
  * the checks that stop decoding loudly (non-finite logits, a row with no token left).
Strategies: greedy (argmax at every step) and sample (draw from softmax(logits / temperature),
restricted by top-k and/or top-p, with a seeded torch.Generator of its own) in minillm.sampling;
beam in minillm.beam.

Tensor symbols: B batch (rows still decoding), T target length, V vocabulary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

STRATEGIES = ("greedy", "sample", "beam")


# ------------------------------------------------------------------------------------------------
# What each setting accepts: ONE table of bounds. GenerationConfig checks itself against it; the web
# API and generate.py (minillm.machinery.settings) add their help text and lower some upper bounds.
# ------------------------------------------------------------------------------------------------

def _show(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Bound:
    """What one GenerationConfig field accepts: a choice, or an int/number in [low, high]."""
    kind: str                  # "choice" | "int" (not a bool, not a float) | "number" (int, float)
    low: float = 0             # the smallest value allowed (or the bound to exceed: low_inclusive)
    high: float | None = None  # the largest allowed; None: no bound here (a server adds one)
    low_inclusive: bool = True  # False: the value must be strictly greater than low
    choices: tuple = ()        # kind "choice": the allowed strings
    nullable: bool = False     # None is allowed too (the seed: None draws a fresh one)
    hint: str = ""             # added to the error message when a value is refused

    def range_text(self) -> str:
        """[1, 8], (0, 1], >= 1, or the choices: how error messages and --help state the range."""
        if self.kind == "choice":
            return f"one of {list(self.choices)}"
        if self.high is None:
            return f"{'>=' if self.low_inclusive else '>'} {_show(self.low)}"
        opening = "[" if self.low_inclusive else "("
        return f"in {opening}{_show(self.low)}, {_show(self.high)}]"

    def check(self, label: str, value) -> None:
        """Raise ValueError, one line naming ``label`` and the range, unless ``value`` fits."""
        if value is None and self.nullable:
            return
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"{label} must be {self.range_text()}, got {value!r:.60}")
            return
        # subtle: isinstance(True, int) is True in Python, so a bool would pass as the integer 1.
        wrong_type = isinstance(value, bool) or not isinstance(value, (int, float))
        if wrong_type or (self.kind == "int" and isinstance(value, float)):
            expected = "an integer" if self.kind == "int" else "a number"
            raise ValueError(f"{label} must be {expected}, got {value!r:.60}")
        # subtle: only floats can be NaN or infinite; math.isfinite(10**400) raises OverflowError.
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{label} must be finite, got {value}")
        too_low = value < self.low if self.low_inclusive else value <= self.low
        if too_low or (self.high is not None and value > self.high):
            raise ValueError(f"{label} must be {self.range_text()}, got {value}{self.hint}")


BOUNDS: dict[str, Bound] = {
    "strategy": Bound("choice", choices=STRATEGIES),
    # The model's max_len bounds this too (decode_ids checks it); a server adds its own cap.
    "max_new_tokens": Bound("int", low=1),
    # Below 1e-2 the logits are scaled by more than 100: a logit of 10 becomes > 1000, the softmax
    # is then greedy in all but name, and 1e-40 turns finite logits into inf (NaN after softmax).
    # Above 10 the distribution is close to uniform: noise, not an answer.
    "temperature": Bound(
        "number", low=0.01, high=10.0,
        hint="; greedy decoding is the 0 limit: strategy='greedy' (--strategy greedy)"),
    # 0 = off. The vocabulary size bounds it in practice; a server states that bound.
    "top_k": Bound("int", low=0),
    # p = 0 would keep no token; 1.0 = off (Holtzman et al. 2020).
    "top_p": Bound("number", low=0.0, high=1.0, low_inclusive=False),
    # Beam search costs num_beams decoder rows per question per step; a server caps it.
    "num_beams": Bound("int", low=1),
    # alpha in score / length**alpha (Wu et al. 2016): 0 ranks by the raw sum (favours short
    # answers), > 0 favours longer ones, < 0 shorter ones (Hugging Face allows that too). Beyond |5|
    # the length decides everything and the model's probabilities nothing.
    "length_penalty": Bound("number", low=-5.0, high=5.0),
    # CTRL (Keskar et al. 2019) used 1.2; 1.0 = off, < 1 encourages repeats. 1e-40 would divide a
    # positive logit into inf (NaN after softmax); within [0.1, 10] a logit grows at most 10x.
    "repetition_penalty": Bound("number", low=0.1, high=10.0),
    # 0 = off; Paulus et al. 2018 used 3. Longer n-grams almost never repeat by chance.
    "no_repeat_ngram_size": Bound("int", low=0, high=10),
    # torch.Generator.manual_seed takes any int below 2**64; a non-negative 63-bit one stays
    # portable (JSON, C).
    "seed": Bound("int", low=0, high=2**63 - 1, nullable=True),
}


@dataclass
class GenerationConfig:
    """How to decode. Each field accepts what BOUNDS says, checked when built.
    The comments say why each default is what it is."""
    strategy: str = "greedy"           # deterministic, and the cheapest
    max_new_tokens: int = 64           # most answers of the sample fit; a server caps it
    temperature: float = 1.0           # the model's own distribution
    top_k: int = 0                     # off
    top_p: float = 1.0                 # off
    num_beams: int = 4                 # the usual quality/cost trade-off (Wu et al. 2016: 3-4)
    length_penalty: float = 1.0        # Hugging Face's default: the mean log-probability per token
    repetition_penalty: float = 1.0    # off
    no_repeat_ngram_size: int = 0      # off
    seed: int | None = None            # a fresh seed at every call
    use_cache: bool = True             # False: the slow reference path (full forward every step)
    ignore_eos: bool = False           # True: never stop at <eos> (benchmarks: fixed lengths)
    # True: a compiled step over a static cache (minillm.staticstep); the first call compiles for
    # tens of seconds, so it pays only over many tokens (README, "Faster decoding")
    compile: bool = False

    def __post_init__(self):
        for name, bound in BOUNDS.items():
            bound.check(f"GenerationConfig.{name}", getattr(self, name))
        for name in ("use_cache", "ignore_eos", "compile"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"GenerationConfig.{name} must be True or False, got {value!r}")


# ------------------------------------------------------------------------------------------------
# Logits processors. Each takes logits (B, V) and returns new logits (B, V); each works row by row,
# so a batch gives the same result as its rows one at a time. A token removed from the distribution
# gets logit -inf, so a later softmax gives it probability exactly 0 and renormalises the rest.
# ------------------------------------------------------------------------------------------------

def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / t): t < 1 sharpens the distribution, t > 1 flattens it (Ackley et al.
    1985; Hinton et al. 2015 use the same knob for distillation). Argmax is unchanged, so greedy
    ignores it."""
    # subtle: t -> 0 is the limit of greedy decoding, but dividing by 0 (or 1e-40) gives inf/NaN.
    BOUNDS["temperature"].check("temperature", temperature)
    if temperature == 1.0:
        return logits
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k sampling (Fan et al. 2018, "Hierarchical Neural Story Generation", section 5.1): keep
    the k highest logits of each row, remove the rest. k = 0 or k >= V leaves the logits unchanged.

    subtle: with ties at the k-th value "the k best" is not unique; we keep every token whose logit
    equals the k-th largest, so the result never depends on how a sort breaks ties (a row may then
    keep a few more than k).
    """
    V = logits.size(-1)
    if k <= 0 or k >= V:
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]              # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration",
    eq. 3): keep the smallest set of most likely tokens whose probability reaches p; always at
    least the most likely token. p = 1.0 leaves the logits unchanged. Ties at the boundary are all
    kept, as in ``top_k_filter``.

    subtle: every step is per row: the cut-off is computed on sorted rows, so each row's own
    threshold logit is gathered and compared with that row's own logits (applying one row's cut-off
    to another row is easy to do).
    """
    if p >= 1.0:
        return logits
    sorted_logits = torch.sort(logits, dim=-1, descending=True).values      # (B, V)
    cum_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)               # (B, V), non-decreasing
    # Tokens needed = 1 + how many sorted prefixes still fall short of p. cum_probs is
    # non-decreasing (a sum of non-negative terms), so counting "cum < p" gives the index of the
    # first prefix that reaches p.
    n_keep = (cum_probs < p).sum(dim=-1, keepdim=True) + 1                 # (B, 1), >= 1: argmax
    # subtle: rounding can leave cum_probs[-1] a hair below p, which would ask for V + 1 tokens.
    n_keep = n_keep.clamp(max=logits.size(-1))
    threshold = sorted_logits.gather(-1, n_keep - 1)                       # (B, 1): last kept logit
    return logits.masked_fill(logits < threshold, float("-inf"))


def apply_repetition_penalty(logits: torch.Tensor, prev_ids: torch.Tensor,
                             penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019, section 4.1): make every token that already
    occurs in ``prev_ids`` (B, T) less likely. Keskar et al. divide the logit by the penalty; that
    only lowers a POSITIVE logit, so a negative logit is multiplied instead (as Hugging Face does):
    both move it towards -inf."""
    if penalty == 1.0:
        return logits
    seen = logits.gather(-1, prev_ids)                               # (B, T): logits of seen tokens
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    # subtle: a token seen twice appears twice in prev_ids; scatter writes the same value twice,
    # which is fine, and the penalty is applied once, not once per occurrence.
    return logits.scatter(-1, prev_ids, seen)


def no_repeat_ngram_filter(logits: torch.Tensor, prev_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid any token that would complete an n-gram already present in ``prev_ids`` (B, T)
    (Paulus et al. 2018, "A Deep Reinforced Model for Abstractive Summarization", section 2.5, used
    there for beam search with n=3). n = 0 leaves the logits unchanged."""
    B, T = prev_ids.shape
    if n <= 0 or T < n:
        return logits
    if n == 1:
        # Every token seen once is banned outright.
        return logits.scatter(-1, prev_ids, float("-inf"))
    windows = prev_ids.unfold(1, n, 1)                           # (B, W, n), W = T - n + 1 n-grams
    prefix = prev_ids[:, T - n + 1:]                             # (B, n-1): the newest n-1 tokens
    matches = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (B, W): starts like prefix
    banned = torch.zeros_like(logits, dtype=torch.int32)                     # (B, V)
    # scatter_add (not scatter): two n-grams can end in the same token, one matching and one not.
    banned.scatter_add_(1, windows[:, :, -1], matches.to(torch.int32))
    return logits.masked_fill(banned > 0, float("-inf"))


def special_token_ban(vocab_size: int, ids: tuple[int, ...], device) -> torch.Tensor:
    """(V,) additive row: -inf at ``ids`` (<pad>, <bos>: never valid answer tokens), 0 elsewhere."""
    row = torch.zeros(vocab_size, device=device)
    row[list(ids)] = float("-inf")
    return row


def process_logits(logits: torch.Tensor, prev_ids: torch.Tensor, config: GenerationConfig,
                   ban: torch.Tensor) -> torch.Tensor:
    """All processors of ``config`` in the usual order (penalties first, then temperature, top-k,
    top-p, as Hugging Face's generate does), after adding ``ban`` (see ``special_token_ban``).
    Temperature, top-k and top-p only change sampling: they never remove or demote the argmax, so
    greedy and beam search skip them (beam search scores with the model's own log-probabilities).
    Each processor that is off costs nothing: on the greedy hot path this is one addition."""
    logits = logits + ban                                           # (B, V) + (V,): a new tensor
    logits = apply_repetition_penalty(logits, prev_ids, config.repetition_penalty)
    logits = no_repeat_ngram_filter(logits, prev_ids, config.no_repeat_ngram_size)
    if config.strategy == "sample":
        logits = apply_temperature(logits, config.temperature)
        logits = top_k_filter(logits, config.top_k)
        logits = top_p_filter(logits, config.top_p)
    return logits


def check_finite(logits: torch.Tensor, step: int) -> None:
    """Fail loudly on NaN/inf logits: sampling from them would silently return garbage (multinomial
    on NaN probabilities picks arbitrary tokens or raises a cryptic error deep inside torch).

    subtle: one pass over (B, V) instead of isfinite(), which costs several: a row's SUM is finite
    exactly when every entry is (NaN and +-inf propagate), except that finite logits beyond ~1e34
    would overflow it: no working model produces those, and we would call them corrupt too."""
    row_ok = torch.isfinite(logits.sum(dim=-1))                               # (B,)
    if not bool(row_ok.all()):
        rows = (~row_ok).nonzero().flatten().tolist()
        raise FloatingPointError(
            f"the model produced non-finite logits (NaN or inf) at decoding step {step} for "
            f"batch rows {rows}; the checkpoint's weights are probably corrupt (a diverged "
            "training run?)")


def check_not_empty(logits: torch.Tensor, step: int) -> None:
    """After the processors every row must keep a token (no_repeat_ngram_size can ban them all)."""
    empty = torch.isneginf(logits).all(dim=-1)                               # (B,)
    if empty.any():
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"every token was ruled out at decoding step {step} for batch rows "
                         f"{rows}; no_repeat_ngram_size is too small for this vocabulary")
