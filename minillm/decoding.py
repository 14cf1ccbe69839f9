"""Decoding, one token at a time: the settings, the logits processors, and greedy decoding and sampling.

How a sequence-to-sequence model answers (Sutskever et al. 2014; Vaswani et al. 2017, section 3): the encoder
reads the question once, then the decoder produces the answer one token at a time, each new token chosen from
the model's distribution over the vocabulary given the question and the tokens so far.
  * The decoder keeps a key/value cache (``model.make_cache``): each step feeds only the newest token, whose
    self-attention reads the cached keys/values of the earlier positions and whose cross-attention reads the
    encoder output's keys/values, computed once. Without it every step re-runs the encoder and the whole prefix:
    O(T^2) work instead of O(T). ``use_cache=False`` keeps that slow way as the reference path.
  * Each row stops at its own ``<eos>`` and leaves the batch (``cache.reorder``); padding is masked, so a batch
    gives the same answers as its questions asked one at a time.
Strategies: greedy (argmax at every step); sample (draw from softmax(logits / temperature), restricted by top-k
and/or top-p, with a seeded torch.Generator of its own); beam (minillm.beam).

Tensor symbols: B batch (rows still decoding), S source length, T target length, C model width, V vocabulary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

STRATEGIES = ("greedy", "sample", "beam")


# ----------------------------------------------------------------------------------------------------------
# The settings: ONE table of what each decoding setting accepts. GenerationConfig checks itself against it,
# and the web API (minillm.machinery.api) and generate.py derive their types, bounds and help from it.
# ----------------------------------------------------------------------------------------------------------

def _show(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Setting:
    """What one GenerationConfig field accepts: a choice, or an int/number in [low, high] (or (low, high])."""
    kind: str                      # "choice" | "int" (never a bool or a float) | "number" (an int or a float)
    help: str                      # one line, for generate.py --help
    low: float = 0                 # the smallest value allowed (or the bound it must exceed, see low_inclusive)
    high: float | None = None      # the largest value allowed; None: no bound in the library (a server adds one)
    low_inclusive: bool = True     # False: the value must be strictly greater than low
    choices: tuple = ()            # kind "choice": the allowed strings
    nullable: bool = False         # None is allowed too (the seed: None draws a fresh one)
    hint: str = ""                 # added to the error message when a value is refused

    def range_text(self) -> str:
        """[1, 8], (0, 1], >= 1, or the choices: how the error messages and the --help state the range."""
        if self.kind == "choice":
            return f"one of {list(self.choices)}"
        if self.high is None:
            return f"{'>=' if self.low_inclusive else '>'} {_show(self.low)}"
        return f"in {'[' if self.low_inclusive else '('}{_show(self.low)}, {_show(self.high)}]"

    def check(self, label: str, value) -> None:
        """Raise ValueError, one line naming ``label`` and the expected range, unless ``value`` is allowed."""
        if value is None and self.nullable:
            return
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"{label} must be {self.range_text()}, got {value!r:.60}")
            return
        # subtle: isinstance(True, int) is True in Python, so a bool would pass as the integer 1.
        wrong_type = isinstance(value, bool) or not isinstance(value, (int, float))
        if wrong_type or (self.kind == "int" and isinstance(value, float)):
            raise ValueError(f"{label} must be {'an integer' if self.kind == 'int' else 'a number'}, got {value!r:.60}")
        # subtle: only floats can be NaN or infinite; math.isfinite(10**400) would raise OverflowError instead.
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{label} must be finite, got {value}")
        too_low = value < self.low if self.low_inclusive else value <= self.low
        if too_low or (self.high is not None and value > self.high):
            raise ValueError(f"{label} must be {self.range_text()}, got {value}{self.hint}")


SETTINGS: dict[str, Setting] = {
    "strategy": Setting("choice", "how to pick each token", choices=STRATEGIES),
    # The model's max_len bounds this too (decode_ids checks it); a server adds its own cap.
    "max_new_tokens": Setting("int", "answer tokens at most, not counting <bos>/<eos>", low=1),
    # Below 1e-2 the logits are scaled by more than 100: a logit of 10 becomes > 1000, the softmax is then
    # greedy in all but name, and 1e-40 turns finite logits into inf (NaN after softmax). Above 10 the
    # distribution is close to uniform: noise, not an answer.
    "temperature": Setting("number", "sample: logits / temperature; < 1 sharper, > 1 flatter", low=0.01, high=10.0,
                           hint="; greedy decoding is the 0 limit: strategy='greedy' (--strategy greedy)"),
    # 0 = off. The vocabulary size bounds it in practice; a server states that bound.
    "top_k": Setting("int", "sample: keep the k most likely tokens (0 = off)", low=0),
    # p = 0 would keep no token; 1.0 = off (Holtzman et al. 2020).
    "top_p": Setting("number", "sample: keep the smallest set of tokens with probability >= p (1 = off)",
                     low=0.0, high=1.0, low_inclusive=False),
    # Beam search costs num_beams decoder rows per question per step; a server caps it.
    "num_beams": Setting("int", "beam: how many partial answers to keep (K)", low=1),
    # alpha in score / length**alpha (Wu et al. 2016): 0 ranks by the raw sum (favours short answers), > 0
    # favours longer ones, < 0 shorter ones (Hugging Face allows that too). Beyond |5| the length decides
    # everything and the model's probabilities nothing.
    "length_penalty": Setting("number", "beam: alpha in score / length**alpha (0 = raw sum)", low=-5.0, high=5.0),
    # CTRL (Keskar et al. 2019) used 1.2; 1.0 = off, < 1 encourages repeats. 1e-40 would divide a positive
    # logit into inf (NaN after softmax); within [0.1, 10] a logit grows at most 10x and stays finite.
    "repetition_penalty": Setting("number", "every strategy: > 1 makes tokens already in the answer less "
                                  "likely (1 = off)", low=0.1, high=10.0),
    # 0 = off; Paulus et al. 2018 used 3. Longer n-grams almost never repeat by chance.
    "no_repeat_ngram_size": Setting("int", "every strategy: never repeat an n-gram of this size (0 = off)",
                                    low=0, high=10),
    # torch.Generator.manual_seed takes any int below 2**64; non-negative 63-bit keeps it portable (JSON, C).
    "seed": Setting("int", "sample: the seed of sampling's own generator (none = a fresh seed)",
                    low=0, high=2**63 - 1, nullable=True),
}


@dataclass
class GenerationConfig:
    """How to decode. Each field means and accepts what SETTINGS says; checked when built. Comments: the defaults."""
    strategy: str = "greedy"           # deterministic, and the cheapest
    max_new_tokens: int = 64           # most answers of the sample fit; a server caps it lower or higher
    temperature: float = 1.0           # the model's own distribution
    top_k: int = 0                     # off
    top_p: float = 1.0                 # off
    num_beams: int = 4                 # the usual trade-off of quality and cost (Wu et al. 2016 used 3-4)
    length_penalty: float = 1.0        # Hugging Face's default: the mean log-probability per token
    repetition_penalty: float = 1.0    # off
    no_repeat_ngram_size: int = 0      # off
    seed: int | None = None            # a fresh seed at every call
    use_cache: bool = True             # False: the slow reference path (full forward every step), for tests/bench
    ignore_eos: bool = False           # True: never stop at <eos>, always produce max_new_tokens (benchmarks)

    def __post_init__(self):
        for name, setting in SETTINGS.items():
            setting.check(f"GenerationConfig.{name}", getattr(self, name))
        for name in ("use_cache", "ignore_eos"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"GenerationConfig.{name} must be True or False, got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------------------------------------
# Logits processors. Each takes logits (B, V) and returns new logits (B, V); each works row by row, so a batch
# gives the same result as its rows one at a time. A token removed from the distribution gets logit -inf, so
# a later softmax gives it probability exactly 0 and renormalises the rest.
# ----------------------------------------------------------------------------------------------------------

def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / t): t < 1 sharpens the distribution, t > 1 flattens it (Ackley et al. 1985;
    Hinton et al. 2015 use the same knob for distillation). Argmax is unchanged, so greedy ignores it."""
    # subtle: t -> 0 is the limit of greedy decoding, but dividing by 0 (or by 1e-40) gives inf/NaN logits.
    SETTINGS["temperature"].check("temperature", temperature)
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

    subtle: every step is per row: the cut-off is computed on sorted rows, so each row's own threshold logit is
    gathered and compared with that row's own logits (applying one row's cut-off to another row is easy to do).
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


def process_logits(logits: torch.Tensor, prev_ids: torch.Tensor, config: GenerationConfig,
                   never: torch.Tensor) -> torch.Tensor:
    """All processors of ``config`` in the usual order (penalties first, then temperature, top-k, top-p, as
    Hugging Face's generate does), after adding ``never`` (see ``never_generated``).
    Temperature, top-k and top-p only change sampling: they never remove or demote the argmax, so greedy and
    beam search skip them (beam search scores with the model's own log-probabilities).
    Each processor that is off costs nothing: on the greedy hot path this is one addition over (B, V)."""
    logits = logits + never                                                   # (B, V) + (V,): a new tensor
    logits = apply_repetition_penalty(logits, prev_ids, config.repetition_penalty)
    logits = no_repeat_ngram_filter(logits, prev_ids, config.no_repeat_ngram_size)
    if config.strategy == "sample":
        logits = apply_temperature(logits, config.temperature)
        logits = top_k_filter(logits, config.top_k)
        logits = top_p_filter(logits, config.top_p)
    return logits


def check_finite(logits: torch.Tensor, step: int) -> None:
    """Fail loudly on NaN/inf logits: sampling from them would silently return garbage (multinomial on NaN
    probabilities picks arbitrary tokens or raises a cryptic error deep inside torch).

    subtle: one pass over (B, V) instead of isfinite(), which costs several: a row's SUM is finite exactly when
    every entry is (NaN and +-inf propagate), except that finite logits beyond ~1e34 would overflow it -- no
    working model produces those, and we would rather call them corrupt too."""
    row_ok = torch.isfinite(logits.sum(dim=-1))                               # (B,)
    if not bool(row_ok.all()):
        raise FloatingPointError(f"the model produced non-finite logits (NaN or inf) at decoding step {step} for "
                                 f"batch rows {(~row_ok).nonzero().flatten().tolist()}; the checkpoint's weights "
                                 "are probably corrupt (a diverged training run?)")


def check_not_empty(logits: torch.Tensor, step: int) -> None:
    """After the processors every row must keep at least one token (no_repeat_ngram_size can ban them all)."""
    empty = torch.isneginf(logits).all(dim=-1)                               # (B,)
    if empty.any():
        raise ValueError(f"every token was ruled out at decoding step {step} for batch rows "
                         f"{empty.nonzero().flatten().tolist()}; no_repeat_ngram_size is too small for this vocabulary")


# ----------------------------------------------------------------------------------------------------------
# The step driver every strategy uses, then greedy decoding and sampling: one token per row per step
# ----------------------------------------------------------------------------------------------------------

class SpecialIds(NamedTuple):
    """The model's special token ids (from its config), gathered once."""
    pad: int
    bos: int
    eos: int


def special_ids(model) -> SpecialIds:
    return SpecialIds(pad=model.cfg.pad_id, bos=model.cfg.bos_id, eos=model.cfg.eos_id)


class StepDecoder:
    """One decoding step for the rows still running, with or without the KV cache.

    cached:    the encoder ran once; each step feeds only the newest token (B, 1) to ``model.decode_step``.
    reference: no cache; each step re-runs ``model(src_ids, all tokens so far)``: the plain O(T^2) way.
    ``keep(index)`` drops/duplicates/reorders rows (beams, finished rows) in whichever state is held.
    """

    def __init__(self, model, src: torch.Tensor, use_cache: bool):
        self.model, self.src, self.use_cache = model, src, use_cache
        if use_cache:
            enc_out, src_mask = model.encode(src)                            # (B, S, C), (B, S): run ONCE
            self.cache = model.make_cache(enc_out, src_mask, src)            # cross-attn K/V computed once too

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


def greedy_or_sample(model, src: torch.Tensor, config: GenerationConfig, special: SpecialIds, on_token=None):
    """src: (B, S) padded source ids. Returns, per row, (answer ids without <bos>/<eos>, finished at <eos>).
    ``on_token(rows, next_ids)``, when given, sees each step's new ids (B,) and their rows' indices (streaming)."""
    B = src.size(0)
    decoder = StepDecoder(model, src, config.use_cache)
    generator = None
    if config.strategy == "sample":
        # A generator of our own: a seed gives the same answers every time, and sampling never moves the
        # global RNG that training (dropout, shuffling) relies on. seed=None draws a fresh, random seed.
        generator = torch.Generator(device=src.device)
        generator.seed() if config.seed is None else generator.manual_seed(config.seed)
    # One preallocated buffer for every row's tokens (B, 1 + max_new): no torch.cat per step.
    tokens = torch.full((B, 1 + config.max_new_tokens), special.pad, dtype=torch.long, device=src.device)
    tokens[:, 0] = special.bos
    rows = list(range(B))                           # original row index of each row still decoding
    results: list = [None] * B
    never = never_generated(model.cfg.vocab_size, (special.pad, special.bos), src.device)     # (V,)
    for t in range(config.max_new_tokens):
        logits = decoder.step(tokens[:, :t + 1])                              # (B, V)
        check_finite(logits, t)
        logits = process_logits(logits, tokens[:, :t + 1], config, never)
        if config.no_repeat_ngram_size:               # the only processor that can rule out every token
            check_not_empty(logits, t)
        if config.strategy == "greedy":
            next_ids = logits.argmax(dim=-1)                                  # (B,)
        else:
            probs = logits.softmax(dim=-1)                                    # (B, V), filtered tokens have 0
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(1)   # (B,)
        tokens[:, t + 1] = next_ids
        if on_token is not None:
            on_token(rows, next_ids)
        done = torch.zeros_like(next_ids, dtype=torch.bool) if config.ignore_eos else next_ids == special.eos
        done = done | (t == config.max_new_tokens - 1)                       # (B,): the last step ends every row
        if done.any():
            for i in done.nonzero().flatten().tolist():
                ids = tokens[i, 1:t + 2].tolist()
                finished = bool(next_ids[i] == special.eos) and not config.ignore_eos
                results[rows[i]] = (ids[:-1] if finished else ids, finished)
            keep = (~done).nonzero().flatten()                                # (B',)
            if keep.numel() == 0:
                break
            # Finished rows leave the batch: the next steps neither compute nor cache anything for them.
            decoder.keep(keep)
            tokens = tokens.index_select(0, keep)
            rows = [rows[i] for i in keep.tolist()]
    return results
