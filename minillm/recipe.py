"""The recipe of a training run: `TrainConfig`, every setting a run needs besides the model's sizes,
each with its unit or the reason for its default, and the presets `train.py --config` picks.

A field's comment is also its `--help` (train.py reads it from this file), and `__post_init__`
refuses a value that cannot work, naming the flag. The measurements behind the defaults live in
bench/README.md, where they are re-run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from minillm.tokenizer import FIRST_MERGE_ID
from minillm.transformer import MODEL_PRESETS


# fields with a fixed set of values (train.py turns these into argparse choices)
CHOICES = {"model": tuple(MODEL_PRESETS), "decay": ("cosine", "linear"),
           "device": ("auto", "cpu", "cuda"), "precision": ("auto", "fp32", "bf16", "fp16"),
           "select_by": ("chrf", "nll")}


@dataclass
class TrainConfig:
    """Everything a run needs besides the model's sizes. Defaults are the `small` preset (CPU).

    A field's comment, on its line or on the lines just above it, is its --help in train.py."""
    # --- data
    data: str = "data/sample.json"     # JSON list / JSONL / CSV of question-answer pairs
    out: str = "runs/small"            # run directory: tokenizer, log.jsonl, model.pt, state-*.pt
    # share of pairs (by hash of the question) held out for evaluation
    val_fraction: float = 0.1
    # BPE vocabulary incl. 3 special tokens: 2000 suits the 78 KB sample, ~8000 a few MB
    vocab_size: int = 2000
    # tokens: the question + <eos>, then the passages retrieved; never cuts the question
    max_src_len: int = 128
    max_tgt_len: int = 192             # tokens; longer answers are cut without <eos>
    # --- retrieval: passages the model reads after the question (minillm.corpus, minillm.retrieval)
    # articles file the model reads (JSON list of madde/baslik/metin/mulga); "" = none
    corpus: str = "data/anayasa.json"
    # article passages per question (an article the question names comes first)
    retrieve_articles: int = 1
    # training answers per question (found by their questions); 0 = none
    retrieve_pairs: int = 0
    # words per article passage; a longer article is cut into overlapping windows
    window_words: int = 40
    # words from one window's start to the next's (overlap: window_words - stride)
    window_stride: int = 30
    # --- model (None = the preset's value)
    # ModelConfig preset: "small" (~8M params, CPU) or "base" (~100M, GPU)
    model: str = "small"
    d_model: int | None = None         # C, residual width
    n_heads: int | None = None         # H, attention heads
    n_layers: int | None = None        # encoder layers = decoder layers
    d_ff: int | None = None            # feed-forward hidden width
    # probability; 0.05 in the small preset, 0.1 in base (Vaswani et al. 2017, §5.4)
    dropout: float | None = None
    # pointer-generator head (minillm.copying); None = on when the run reads a corpus
    copy: bool | None = None
    # --- batch
    # padded tokens (source + target) per micro-batch per process; small for 2 CPU cores
    batch_tokens: int = 1024
    grad_accum: int = 1                # micro-batches per optimiser step per process
    # --- optimisation
    # peak learning rate; 2e-3 and 4e-3 learned less per step (bench/learning.py)
    lr: float = 1e-3
    min_lr: float = 1e-4               # floor at the end of the decay (and after max_steps)
    # linear warmup from lr/warmup_steps (Goyal et al. 2017); 10% of a 600-step run
    warmup_steps: int = 60
    # "linear" (as Hugging Face's get_linear_schedule_with_warmup) or "cosine" (SGDR)
    decay: str = "linear"
    # True: PyTorch's LinearLR/CosineAnnealingLR instead of the hand-written one
    torch_schedule: bool = False
    # decoupled, on Linear matrices only (optim.param_groups); BART's 0.01
    weight_decay: float = 0.01
    beta1: float = 0.9                 # AdamW first-moment decay
    # AdamW second-moment decay; Adam's default (0.95 is GPT-3's, for huge batches)
    beta2: float = 0.999
    grad_clip: float = 1.0             # max global L2 norm of the gradient; 0 = no clipping
    # Szegedy et al. 2016 (Vaswani et al. used 0.1); off in the recipe measured against BART
    label_smoothing: float = 0.0
    # EMA of the weights, ~1/(1-d)-step memory; 0 = none: 0.995 lagged on 600-step runs
    ema_decay: float = 0.0
    ema_warmup: bool = True            # ramp the decay up as min(d, (1+n)/(10+n)) (TensorFlow EMA)
    max_steps: int = 500               # optimiser steps; the schedule decays to min_lr at this step
    # minutes (0 = none); max_steps is re-fitted to the time left as the run goes
    time_budget: float = 0.0
    # --- precision and speed
    device: str = "auto"               # "auto" (cuda if available), "cpu" or "cuda"
    # "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16" or "fp16"
    precision: str = "auto"
    # torch.compile the model for training (checkpoints stay uncompiled)
    compile: bool = False
    # CPU threads for PyTorch (0 = its default, one per core); 1 on a shared, busy machine
    threads: int = 0
    # --- robustness
    max_bad_steps: int = 5             # consecutive non-finite steps before the run aborts
    seed: int = 1337                   # model init, data order, dropout
    # --- evaluation, logging, checkpoints
    eval_every: int = 100              # steps between evaluations (and at the last step)
    # validation questions answered greedily for BLEU/chrF (0 = none)
    eval_generate: int = 16
    eval_max_new_tokens: int = 48      # answer length cap during evaluation
    print_samples: int = 2             # generated answers printed at each evaluation
    log_every: int = 10                # steps between JSONL "train" records (1 = every step)
    save_every: int = 100              # steps between full training-state checkpoints
    # model.pt keeps the best evaluation by greedy chrF ("nll" when eval_generate is 0) or by "nll"
    select_by: str = "chrf"
    keep_last: int = 2                 # training-state files kept (the best model is model.pt)

    def __post_init__(self):
        """Refuse a value that cannot work, naming the field, its flag and what it accepts."""
        def need(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} must be {expected}, "
                                 f"got {getattr(self, name)!r}")

        def number(name: str) -> float:   # a real number; a NaN or an infinity is refused
            value = getattr(self, name)
            need(name, isinstance(value, (int, float)) and not isinstance(value, bool)
                 and math.isfinite(value), "a finite number")
            return value
        for name, allowed in CHOICES.items():
            need(name, getattr(self, name) in allowed, f"one of {allowed}")
        for name in ("max_steps", "batch_tokens", "eval_every", "log_every", "save_every",
                     "keep_last", "max_bad_steps"):
            need(name, getattr(self, name) >= 1, ">= 1")
        need("grad_accum", 1 <= self.grad_accum <= 4096,
             "in [1, 4096] (a step holds its micro-batches in memory)")
        need("vocab_size", self.vocab_size >= FIRST_MERGE_ID, f">= {FIRST_MERGE_ID} (256 bytes + "
             f"{FIRST_MERGE_ID - 256} special tokens, before any merge)")
        need("max_src_len", self.max_src_len >= 2, ">= 2 (a token and <eos>)")
        need("max_tgt_len", self.max_tgt_len >= 2, ">= 2 (<bos> and a token)")
        for name in ("retrieve_articles", "retrieve_pairs", "eval_generate", "print_samples"):
            need(name, getattr(self, name) >= 0, ">= 0 (0 = none)")
        need("window_words", self.window_words >= 1, ">= 1")
        need("window_stride", 1 <= self.window_stride <= self.window_words,
             f"in [1, window_words = {self.window_words}] (windows must cover every word)")
        # above 1 AdamW moves every weight by ~lr per step: the run diverges at once
        need("lr", 0 < number("lr") <= 1, "in (0, 1]")
        need("min_lr", 0 <= number("min_lr") <= self.lr, f"in [0, lr = {self.lr}]")
        for name in ("beta1", "beta2", "label_smoothing", "ema_decay", "val_fraction"):
            need(name, 0 <= number(name) < 1, "in [0, 1)")
        if self.dropout is not None:
            need("dropout", 0 <= number("dropout") < 1, "in [0, 1)")
        need("threads", self.threads >= 0, ">= 0 (0 = PyTorch's default)")
        need("seed", 0 <= self.seed < 2 ** 63, "in [0, 2**63 - 1] (as a generation seed)")
        # the model's positions; a longer answer fails to decode
        positions = max(self.max_src_len, self.max_tgt_len)
        need("eval_max_new_tokens", 1 <= self.eval_max_new_tokens <= positions,
             f"in [1, {positions}] (the model's positions: the larger of --max-src-len and "
             "--max-tgt-len)")
        for name in ("weight_decay", "grad_clip", "time_budget"):
            need(name, number(name) >= 0, ">= 0")
        need("warmup_steps", 0 <= self.warmup_steps < self.max_steps,
             f"in [0, max_steps = {self.max_steps}) (the warmup must end before the run does)")

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        """`small`: the CPU defaults above. `base`: a ~100M model on one GPU, bf16, bigger
        batches."""
        if name not in TRAIN_PRESETS:
            raise ValueError(f"unknown training preset {name!r}; "
                             f"expected one of {sorted(TRAIN_PRESETS)}")
        return cls(**{**TRAIN_PRESETS[name], **overrides})


# train.py --config NAME: a TrainConfig preset, which names the ModelConfig preset of the same name.
TRAIN_PRESETS = {"small": {},
                 "base": dict(model="base", out="runs/base", vocab_size=8000, max_src_len=192,
                              retrieve_pairs=1, batch_tokens=16384, lr=6e-4, min_lr=6e-5,
                              warmup_steps=500, max_steps=20000, ema_decay=0.999,
                              eval_every=1000, save_every=1000, eval_generate=64, log_every=50)}
