"""Optimisation: AdamW with two parameter groups, a warmup-then-decay learning-rate schedule, and an
EMA.

Three small pieces the training step (training.py: Trainer.train_step) calls once per step, in this
order: optimizer.step() -> schedule.step() -> ema.update(model).

- AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"): weight decay pulls
  weights towards zero. It is meant for the matrices that mix features; applied to biases, norm
  gains, embeddings or LayerScale gammas it only fights the model (a LayerNorm gain decayed towards
  0 shrinks the activations it is there to set). So there are two groups: decay on the weights of
  nn.Linear layers, none elsewhere.
- The schedule is written by hand as a plain function of the step (`lr_at`), next to the same
  schedule built from PyTorch's own schedulers (`torch_schedule`); a test proves the two agree.
- EMA (Polyak & Juditsky 1992 averaging, in its exponential form): a slow copy of the weights that
  evaluation and generation use; what it gains on a short run is measured in bench/README.md
  ("EMA").
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn


# --------------------------------------------------------------------------------------------------
# AdamW with two parameter groups

def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split the parameters into [decay group, no-decay group] for torch.optim.AdamW.

    Decay: the 2-D weight of every nn.Linear (the feature-mixing matrices).
    No decay: everything else: biases, LayerNorm/RMSNorm gains, embeddings, LayerScale gammas.
    """
    # subtle: an output projection may share ("tie") its weight with the embedding; the same
    # Parameter is then reachable as a Linear weight and as an Embedding weight. We treat it as an
    # embedding (no decay) and list each Parameter exactly once, because AdamW refuses a parameter
    # that sits in two groups.
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            is_matrix = isinstance(module, nn.Linear) and name == "weight" and p.dim() >= 2
            if is_matrix and id(p) not in embedding_ids:
                decay.append(p)
            else:
                no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95),
                   eps: float = 1e-8, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) over `param_groups(model, weight_decay)`.

    betas=(0.9, 0.95) is the GPT-3 paper's setting (used by nanoGPT): the second-moment average
    forgets faster than Adam's 0.999 default, which keeps steps bounded after a burst of small
    gradients in huge-batch runs. The Trainer passes TrainConfig.beta2 instead: 0.999, part of the
    plain recipe measured in bench/README.md.
    fused: PyTorch's single-kernel AdamW on CUDA (None = PyTorch's default choice).
    """
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                             fused=fused)


# --------------------------------------------------------------------------------------------------
# Learning-rate schedule: linear warmup, then linear or cosine decay

def lr_at(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0,
          decay: str = "cosine") -> float:
    """Learning rate for optimiser step `step` (0-based: the rate used by the (step+1)-th update).

    warmup  (step < warmup_steps):
        max_lr * (step + 1) / warmup_steps                        (Goyal et al. 2017, linear warmup)
    decay   (warmup_steps <= step < total_steps),
            with p = (step - warmup_steps) / (total_steps - warmup_steps):
        linear: min_lr + (max_lr - min_lr) * (1 - p)
        cosine: min_lr + (max_lr - min_lr) * (1 + cos(pi * p)) / 2  (Loshchilov & Hutter 2017, SGDR)
    after   (step >= total_steps):
        min_lr (the decay's own value at p = 1)
    Warmup starts at max_lr / warmup_steps, not 0: a step with lr 0 would be a wasted batch.
    """
    if decay not in ("linear", "cosine"):
        raise ValueError(f"decay must be 'linear' or 'cosine', got {decay!r}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    # progress through the decay, in [0, 1)
    p = (step - warmup_steps) / (total_steps - warmup_steps)
    if decay == "linear":
        return min_lr + (max_lr - min_lr) * (1.0 - p)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))


class Schedule:
    """The hand-written schedule with the interface of a torch.optim.lr_scheduler
    (step / state_dict).

    At construction it sets the rate for step 0; each `step()` (called after optimizer.step()) moves
    to the next step and sets its rate in every parameter group.
    """

    def __init__(self, optimizer, max_lr, warmup_steps, total_steps, min_lr=0.0, decay="cosine"):
        self.optimizer = optimizer
        self.max_lr, self.warmup_steps, self.total_steps = max_lr, warmup_steps, total_steps
        self.min_lr, self.decay = min_lr, decay
        self.last_step = 0
        self._apply()

    def lr(self, step: int) -> float:
        """The rate at `step` under this schedule's settings."""
        return lr_at(step, self.max_lr, self.warmup_steps, self.total_steps, self.min_lr,
                     self.decay)

    def _apply(self):
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.last_step)

    def step(self):
        self.last_step += 1
        self._apply()

    def set_total_steps(self, total_steps: int) -> None:
        """Re-spread the decay over a new run length (a longer --max-steps on resume, or a time
        budget); the rate of the current step changes at once."""
        self.total_steps = int(total_steps)
        self._apply()

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "max_lr": self.max_lr,
                "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "min_lr": self.min_lr, "decay": self.decay}

    def load_state_dict(self, state: dict):
        self.last_step = int(state["last_step"])
        self.max_lr = state["max_lr"]
        self.warmup_steps = state["warmup_steps"]
        self.total_steps = state["total_steps"]
        self.min_lr = state["min_lr"]
        self.decay = state["decay"]
        self._apply()


def torch_schedule(optimizer, max_lr, warmup_steps, total_steps, min_lr=0.0, decay="cosine"):
    """The same schedule from PyTorch's own schedulers (the "fused" path next to `Schedule`),
    for 0 <= step <= total_steps. The optimizer's lr must be max_lr (LinearLR/CosineAnnealingLR
    scale it).

    subtle: CosineAnnealingLR is periodic: past T_max it climbs back up, where `lr_at` stays at
    min_lr. Training never goes past total_steps, so the two agree on every step that is used.
    """
    from torch.optim import lr_scheduler   # imported here: only this fused path uses it
    for group in optimizer.param_groups:
        group["lr"] = max_lr
        group["initial_lr"] = max_lr
    n_decay = total_steps - warmup_steps
    if decay == "cosine":
        after = lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_decay, eta_min=min_lr)
    else:
        after = lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=min_lr / max_lr,
                                      total_iters=n_decay)
    if warmup_steps == 0:
        return after
    # factor at step t: 1/W + (1 - 1/W) * t / (W - 1)  ==  (t + 1) / W, for t < W
    warm = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0,
                                 total_iters=max(warmup_steps - 1, 1))
    return lr_scheduler.SequentialLR(optimizer, [warm, after], milestones=[warmup_steps])


# --------------------------------------------------------------------------------------------------
# Exponential moving average of the weights

class EMA:
    """shadow <- d * shadow + (1 - d) * weight, after every optimiser step.

    With warmup=True the decay ramps up: d_n = min(decay, (1 + n) / (10 + n)) on the n-th update
    (n = 0, 1, ...), the `num_updates` rule of TensorFlow's tf.train.ExponentialMovingAverage. Early
    on the shadow then follows the fast-moving weights closely instead of staying anchored to the
    random initialisation (with d = 0.999 a fixed decay would still hold 37% of the initial weights
    after 1000 steps).

    The shadow is kept in float32 on the model's device: parameters are averaged, persistent
    floating-point buffers copied. Use `with ema.applied(model):` to evaluate with the EMA weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        # subtle: iterate named_parameters(), not state_dict(): a tied weight (head == embedding)
        # appears twice in the state_dict but is one Parameter, and must have one shadow, not two
        # that disagree. Non-persistent buffers (derived tables such as sinusoidal positions) are
        # not saved, so not kept.
        persistent = set(model.state_dict())
        self.param_names = [n for n, p in model.named_parameters() if p.is_floating_point()]
        self.buffer_names = [n for n, b in model.named_buffers()
                             if b.is_floating_point() and n in persistent]
        tensors = self._tensors(model)
        self.shadow = {name: tensors[name].detach().clone().float()
                       for name in self.param_names + self.buffer_names}

    @staticmethod
    def _tensors(model: nn.Module) -> dict:
        return {**dict(model.named_parameters()), **dict(model.named_buffers())}

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        # TensorFlow ExponentialMovingAverage(num_updates)
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module):
        d = self.current_decay()
        tensors = self._tensors(model)
        for name in self.param_names:
            # lerp: shadow + (1 - d) * (t - shadow)  ==  d * shadow + (1 - d) * t
            self.shadow[name].lerp_(tensors[name].detach().float(), 1.0 - d)
        for name in self.buffer_names:
            self.shadow[name].copy_(tensors[name])  # buffers (running statistics) follow the model
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module):
        """Overwrite the model's weights with the EMA weights (for an inference checkpoint)."""
        tensors = self._tensors(model)
        for name, s in self.shadow.items():
            tensors[name].copy_(s)

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Temporarily swap the EMA weights into `model`; the training weights come back on exit,
        also when the body raises."""
        tensors = self._tensors(model)
        backup = {name: tensors[name].detach().clone() for name in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, t in backup.items():
                    tensors[name].copy_(t)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict):
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state does not match the model; "
                           f"differing keys: {sorted(missing)[:5]}")
        self.decay = state["decay"]
        self.warmup = state["warmup"]
        self.num_updates = int(state["num_updates"])
        for name, s in state["shadow"].items():
            self.shadow[name].copy_(s)
