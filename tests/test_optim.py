"""Specification of minillm/optim.py: AdamW parameter groups, the learning-rate schedule, the EMA."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from minillm.optim import EMA, Schedule, lr_at, make_optimizer, param_groups, torch_schedule


class LayerScale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((c,), 0.1))

    def forward(self, x):
        return self.gamma * x


class Toy(nn.Module):
    """Every kind of parameter the real model has: embedding, Linear (weight+bias), norm, LayerScale, tied head."""

    def __init__(self, v=11, c=8):
        super().__init__()
        self.emb = nn.Embedding(v, c)
        self.fc = nn.Linear(c, c)
        self.norm = nn.LayerNorm(c)
        self.scale = LayerScale(c)
        self.head = nn.Linear(c, v, bias=False)
        self.head.weight = self.emb.weight  # tied: must count as an embedding, once

    def forward(self, ids):
        return self.head(self.norm(self.scale(self.fc(self.emb(ids)))))


def test_param_groups_decay_only_linear_matrices():
    model = Toy()
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(model.fc.weight)]
    expected = {id(model.emb.weight), id(model.fc.bias), id(model.norm.weight), id(model.norm.bias),
                id(model.scale.gamma)}
    assert {id(p) for p in no_decay["params"]} == expected
    assert len(no_decay["params"]) == len(expected)  # the tied weight appears once
    # every trainable parameter is in exactly one group
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_weight_decay_reaches_matrices_and_spares_the_rest():
    """With a zero gradient AdamW's update is pure decoupled decay: w <- w * (1 - lr * wd) on the decay
    group, and nothing on the others. Removing the groups (decay everything or nothing) fails this."""
    torch.manual_seed(0)
    model = Toy()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["fc.weight"], before["fc.weight"] * (1 - 0.1 * 0.5))
    for n in ("emb.weight", "fc.bias", "norm.weight", "norm.bias", "scale.gamma"):
        torch.testing.assert_close(after[n], before[n], rtol=0, atol=0)


def test_lr_schedule_boundaries_by_hand():
    kw = dict(max_lr=1.0, warmup_steps=4, total_steps=14, min_lr=0.1)
    # warmup: (step + 1) / 4
    assert [lr_at(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    for decay in ("linear", "cosine"):
        assert lr_at(4, **kw, decay=decay) == 1.0                # decay starts at the peak
        assert lr_at(14, **kw, decay=decay) == pytest.approx(0.1)  # and ends at min_lr
        assert lr_at(1000, **kw, decay=decay) == pytest.approx(0.1)  # and stays there
    # half-way through the decay (step 9 of 4..14): both schedules sit at the midpoint 0.55
    assert lr_at(9, **kw, decay="linear") == pytest.approx(0.55)
    assert lr_at(9, **kw, decay="cosine") == pytest.approx(0.55)
    # a quarter of the way: linear 1 - 0.9/4; cosine 0.1 + 0.9 * (1 + cos(pi/4)) / 2 (above linear)
    assert lr_at(6.5, **kw, decay="linear") == pytest.approx(0.775)
    assert lr_at(6.5, **kw, decay="cosine") == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    # no warmup: the first step already runs at max_lr
    assert lr_at(0, 1.0, 0, 10) == 1.0
    with pytest.raises(ValueError, match="decay"):
        lr_at(0, 1.0, 1, 10, decay="step")


@given(warmup=st.integers(0, 6), n_decay=st.integers(1, 20), min_frac=st.sampled_from([0.0, 0.1, 0.5]),
       decay=st.sampled_from(["linear", "cosine"]))
def test_hand_schedule_matches_torch_schedulers(warmup, n_decay, min_frac, decay):
    """The hand-written Schedule and PyTorch's LinearLR/CosineAnnealingLR/SequentialLR set the same lr at
    every step from 0 to total_steps."""
    total = warmup + n_decay
    kw = dict(max_lr=3e-3, warmup_steps=warmup, total_steps=total, min_lr=3e-3 * min_frac, decay=decay)
    p1, p2 = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    o1, o2 = torch.optim.SGD([p1], lr=1.0), torch.optim.SGD([p2], lr=1.0)
    hand, ref = Schedule(o1, **kw), torch_schedule(o2, **kw)
    for step in range(total + 1):
        assert o1.param_groups[0]["lr"] == pytest.approx(lr_at(step, **kw), rel=1e-12, abs=1e-15)
        assert o1.param_groups[0]["lr"] == pytest.approx(o2.param_groups[0]["lr"], rel=1e-6, abs=1e-12), step
        o1.step(), o2.step()
        hand.step(), ref.step()


def test_schedule_state_dict_resumes_at_the_same_step():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    s = Schedule(opt, 1.0, 3, 10, decay="linear")
    for _ in range(5):
        s.step()
    opt2 = torch.optim.SGD([p], lr=1.0)
    s2 = Schedule(opt2, 1.0, 3, 10, decay="linear")
    s2.load_state_dict(s.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == lr_at(5, 1.0, 3, 10, decay="linear")


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.0]))
        self.register_buffer("count", torch.tensor([0.0]))


def test_ema_fixed_decay_by_hand():
    m = Scalar()
    ema = EMA(m, decay=0.5, warmup=False)
    # weights 4, 8, 2 after three steps: shadow 0 -> 0.5*0 + 0.5*4 = 2 -> 0.5*2 + 0.5*8 = 5 -> 0.5*5 + 0.5*2 = 3.5
    for w, expect in [(4.0, 2.0), (8.0, 5.0), (2.0, 3.5)]:
        m.w.data.fill_(w)
        m.count.data.fill_(w + 100)
        ema.update(m)
        assert ema.shadow["w"].item() == pytest.approx(expect)
        assert ema.shadow["count"].item() == w + 100  # buffers are copied, not averaged


def test_ema_warmup_decay_by_hand():
    """d_n = min(decay, (1+n)/(10+n)): 0.1, 2/11, 3/12 = 0.25, ... capped at `decay`."""
    m = Scalar()
    ema = EMA(m, decay=0.2, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)
    m.w.data.fill_(10.0)
    ema.update(m)                        # n=0, d=0.1:   0.1*0 + 0.9*10 = 9
    assert ema.shadow["w"].item() == pytest.approx(9.0)
    assert ema.current_decay() == pytest.approx(2 / 11)
    m.w.data.fill_(20.0)
    ema.update(m)                        # n=1, d=2/11:  (2/11)*9 + (9/11)*20
    assert ema.shadow["w"].item() == pytest.approx(2 / 11 * 9 + 9 / 11 * 20)
    assert ema.current_decay() == pytest.approx(0.2)  # n=2: min(0.2, 3/12) = 0.2, the cap
    ema.update(m)
    assert ema.shadow["w"].item() == pytest.approx(0.2 * (2 / 11 * 9 + 9 / 11 * 20) + 0.8 * 20)


def test_ema_applied_swaps_and_restores_even_on_error():
    torch.manual_seed(0)
    model = Toy()
    ema = EMA(model, decay=0.9, warmup=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    raw = {n: t.clone() for n, t in model.state_dict().items()}
    with ema.applied(model):
        for n, t in model.state_dict().items():  # head.weight is tied to emb.weight: one shadow serves both
            torch.testing.assert_close(t, ema.shadow["emb.weight" if n == "head.weight" else n])
        assert not torch.equal(model.fc.weight, raw["fc.weight"])  # the EMA really differs from the raw weights
    for n, t in model.state_dict().items():
        assert torch.equal(t, raw[n])
    with pytest.raises(RuntimeError, match="boom"):
        with ema.applied(model):
            raise RuntimeError("boom")
    for n, t in model.state_dict().items():
        assert torch.equal(t, raw[n])


def test_ema_state_dict_round_trip():
    torch.manual_seed(0)
    model = Toy()
    ema = EMA(model, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            model.fc.weight.add_(0.5)
        ema.update(model)
    other = EMA(Toy(), decay=0.5, warmup=False)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 3 and other.decay == 0.99 and other.warmup
    for n in ema.shadow:
        assert torch.equal(other.shadow[n], ema.shadow[n])
    with pytest.raises(KeyError, match="does not match"):
        EMA(Scalar()).load_state_dict(ema.state_dict())
