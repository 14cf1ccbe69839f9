"""Masked cross-entropy with label smoothing, written out next to PyTorch's fused version.

A decoder is trained to predict `tgt_out_ids[b, t]` from the logits at position t. Padding positions
carry no answer, so they must contribute neither loss nor gradient, and they must not be counted
when we average.

The function returns the SUM of the per-token losses together with the NUMBER of real tokens, not a
mean. subtle: a mean per micro-batch is the wrong thing to accumulate. With gradient accumulation
over micro-batches of different lengths, `mean(mean_1, mean_2)` weights a token of a short batch
more than a token of a long one; the one-big-batch loss is `(sum_1 + sum_2) / (n_1 + n_2)`. The
trainer therefore counts the real target tokens of the whole accumulated batch first and divides
every micro-batch's `loss_sum` by that total
(tests/test_losses.py::test_gradient_accumulation_matches_one_big_batch).

Label smoothing (Szegedy et al. 2016, "Rethinking the Inception Architecture", sec. 7) replaces the
one-hot target q by (1 - eps) * q + eps * u, with u the uniform distribution over the V classes. The
cross-entropy against that mixture splits into two terms, which is exactly PyTorch's definition of
`label_smoothing`:

    loss_t = (1 - eps) * (-log p_t[y_t])  +  eps * mean_over_c(-log p_t[c])

(Vaswani et al. 2017, sec. 5.4, use eps = 0.1.)
"""
import torch
import torch.nn.functional as F


def masked_cross_entropy(logits: torch.Tensor, target_ids: torch.Tensor, pad_id: int = 0,
                         label_smoothing: float = 0.0, fused: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the real tokens, and how many real tokens there were.

    logits: (B, T, V) float, any dtype; target_ids: (B, T) int64, `pad_id` where there is no target.
    Returns (loss_sum, n_tokens): a 0-dim float32 tensor that carries the gradient, and a 0-dim
    int64 tensor. Divide loss_sum by the token count of all you accumulate over (module docstring).

    fused=False is the reference path written out below; fused=True calls F.cross_entropy with
    reduction="sum", ignore_index=pad_id and label_smoothing: the same number in one kernel.
    """
    if logits.dim() != 3 or target_ids.shape != logits.shape[:2]:
        raise ValueError(f"masked_cross_entropy expects logits (B, T, V) and target_ids (B, T); "
                         f"got {tuple(logits.shape)} and {tuple(target_ids.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    B, T, V = logits.shape
    real = target_ids != pad_id                                  # (B, T) bool, True = real token
    n_tokens = real.sum()                                        # 0-dim int64

    # subtle: under bf16/fp16 autocast the logits arrive in low precision; log-softmax over a
    # vocabulary of thousands loses digits there, so both paths compute the loss in float32.
    logits = logits.float()

    if fused:
        loss_sum = F.cross_entropy(logits.view(B * T, V),         # (B*T, V)
                                   target_ids.reshape(B * T),     # (B*T,)
                                   ignore_index=pad_id, reduction="sum",
                                   label_smoothing=label_smoothing)
        return loss_sum, n_tokens

    # log p = z - logsumexp(z): the max-shifted form inside log_softmax never overflows.
    log_probs = torch.log_softmax(logits, dim=-1)                # (B, T, V)
    # subtle: gather needs a valid index even at padding positions; pad_id is a real vocabulary
    # entry (0), so the value gathered there is meaningless but finite; the mask below zeroes it.
    nll = -log_probs.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)   # (B, T): -log p[y]
    if label_smoothing > 0.0:
        # Szegedy et al. 2016, sec. 7: cross-entropy against the smoothed target's uniform part.
        smooth = -log_probs.mean(dim=-1)             # (B, T): mean over the V classes of -log p
        per_token = (1.0 - label_smoothing) * nll + label_smoothing * smooth   # (B, T)
    else:
        per_token = nll                                          # (B, T)
    # torch.where, not a product with the mask: 0 * inf is NaN if a padded row had -inf logits.
    loss_sum = torch.where(real, per_token, torch.zeros_like(per_token)).sum()
    return loss_sum, n_tokens
