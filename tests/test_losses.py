"""Specification of minillm.losses.masked_cross_entropy."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from minillm.losses import masked_cross_entropy


def test_hand_computed_two_tokens():
    # Two classes, logits (0, 0): p = 1/2 each, so -log p = log 2 per real token. The padded position has a
    # huge logit that must not matter. With eps = 0.2 the smoothed loss of a uniform p is still log 2.
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [100.0, -100.0]]])
    target = torch.tensor([[1, 1, 0]])                      # pad_id 0 at the last position
    for fused in (False, True):
        loss_sum, n = masked_cross_entropy(logits, target, pad_id=0, fused=fused)
        assert n.item() == 2
        assert loss_sum.item() == pytest.approx(2 * math.log(2), abs=1e-6)
        loss_sum, _ = masked_cross_entropy(logits, target, pad_id=0, label_smoothing=0.2, fused=fused)
        assert loss_sum.item() == pytest.approx(2 * math.log(2), abs=1e-6)


def test_hand_computed_label_smoothing():
    # V = 3, logits (log 1/2, log 1/4, log 1/4), target class 0, eps = 0.3:
    # (1 - 0.3) * log 2 + 0.3 * (log 2 + log 4 + log 4) / 3 = 0.7 log 2 + 0.5 log 2 = 1.2 log 2.
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    target = torch.tensor([[0]])
    loss_sum, n = masked_cross_entropy(logits, target, pad_id=2, label_smoothing=0.3)
    assert n.item() == 1
    assert loss_sum.item() == pytest.approx(1.2 * math.log(2), abs=1e-6)


@given(B=st.integers(1, 4), T=st.integers(1, 7), V=st.integers(2, 11), pad_id=st.integers(0, 1),
       eps=st.sampled_from([0.0, 0.1, 0.37]), seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1.0, 30.0]))
def test_matches_pytorch_cross_entropy(B, T, V, pad_id, eps, seed, scale):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale
    target = torch.randint(0, V, (B, T), generator=g)
    target[torch.rand(B, T, generator=g) < 0.4] = pad_id    # random padding mask, possibly everything
    expected = F.cross_entropy(logits.view(-1, V), target.view(-1), ignore_index=pad_id, reduction="sum",
                               label_smoothing=eps)
    for fused in (False, True):
        loss_sum, n = masked_cross_entropy(logits, target, pad_id=pad_id, label_smoothing=eps, fused=fused)
        assert n.item() == int((target != pad_id).sum())
        assert loss_sum.dtype == torch.float32
        assert loss_sum.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-4)


@given(seed=st.integers(0, 2**31 - 1), eps=st.sampled_from([0.0, 0.1]))
def test_gradients_agree_and_padding_gets_none(seed, eps):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, 7, generator=g)
    target = torch.randint(1, 7, (3, 5), generator=g)
    target[0, 3:] = 0
    target[2, 1:] = 0
    grads = []
    for fused in (False, True):
        x = logits.clone().requires_grad_(True)
        loss_sum, n = masked_cross_entropy(x, target, label_smoothing=eps, fused=fused)
        (loss_sum / n).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    assert torch.all(grads[0][target == 0] == 0)           # padding positions receive no gradient
    assert torch.all(grads[0][target != 0].abs().sum(-1) > 0)


def test_gradient_accumulation_matches_one_big_batch():
    # Two micro-batches with very different lengths. Normalising each micro-batch's loss_sum by the TOTAL token
    # count reproduces the gradient of the one-big-batch mean; averaging per-micro-batch means does not.
    torch.manual_seed(0)
    V = 6
    weight = torch.randn(V, V)
    a_in = torch.randint(1, V, (2, 9)); a_out = torch.randint(1, V, (2, 9))   # 18 real tokens
    b_in = torch.randint(1, V, (3, 2)); b_out = torch.randint(1, V, (3, 2))   # 6 real tokens
    a_out[1, 4:] = 0                                                           # ... 13 after padding

    def logits_of(x, w):
        return F.one_hot(x, V).float() @ w                                     # (B, T, V)

    # One big batch: pad b to a's length and concatenate.
    big_in = torch.cat([a_in, F.pad(b_in, (0, 7))])
    big_out = torch.cat([a_out, F.pad(b_out, (0, 7))])
    w = weight.clone().requires_grad_(True)
    s, n = masked_cross_entropy(logits_of(big_in, w), big_out)
    (s / n).backward()
    big_grad = w.grad.clone()

    big_loss = (s / n).item()
    total = a_out.ne(0).sum() + b_out.ne(0).sum()   # real target tokens
    assert total.item() == n.item() == 19
    w = weight.clone().requires_grad_(True)
    accumulated = 0.0
    for x, y in ((a_in, a_out), (b_in, b_out)):
        s, _ = masked_cross_entropy(logits_of(x, w), y)
        (s / total).backward()
        accumulated += (s / total).item()
    assert accumulated == pytest.approx(big_loss, rel=1e-6)
    torch.testing.assert_close(w.grad, big_grad)

    # The known bug: mean of the per-micro-batch means gives a different gradient when lengths differ.
    w = weight.clone().requires_grad_(True)
    for x, y in ((a_in, a_out), (b_in, b_out)):
        s, n = masked_cross_entropy(logits_of(x, w), y)
        (s / n / 2).backward()
    assert not torch.allclose(w.grad, big_grad, atol=1e-4)


def test_low_precision_logits_are_computed_in_float32():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 50, generator=g) * 8
    target = torch.randint(1, 50, (2, 4), generator=g)
    ref, _ = masked_cross_entropy(logits.bfloat16().float(), target)
    got, _ = masked_cross_entropy(logits.bfloat16(), target)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)


def test_bad_shapes_and_smoothing_are_rejected():
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        masked_cross_entropy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="label_smoothing"):
        masked_cross_entropy(torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.long), label_smoothing=1.0)
