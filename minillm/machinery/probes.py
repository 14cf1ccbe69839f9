"""What a model computes inside, read with forward hooks while it runs: the residual stream's size after each
block (the lesson's stage `residual`) and the copy head's parts (its stage `copy`).

    norms = residual_norms(model, src_ids, answer_in_ids)      # [(where, mean L2 norm there), ...]
    p_gen, a, written, copied, p = copy_parts(model, src_ids, answer_ids)

A hook sees the values Seq2Seq.forward itself computes, so nothing of the model is rewritten here to print it.
subtle: decode whatever the probe is given (a greedy answer, say) BEFORE calling it: a generation run while the
hooks are in would be recorded too.
"""
from __future__ import annotations

import torch


@torch.inference_mode()
def residual_norms(model, src_ids: list[int], answer_in_ids: list[int]) -> list[tuple[str, float]]:
    """(where, the mean over positions of the residual stream's L2 norm there), in the order the model computes
    them, for the source and the answer teacher-forced (answer_in_ids: <bos> first)."""
    norms = []
    where = {model.embed_dropout: "embedding", model.encoder.norm: "encoder final norm",
             model.decoder.norm: "decoder final norm"}
    where.update({block: f"encoder block {i}" for i, block in enumerate(model.encoder.blocks)})
    where.update({block: f"decoder block {i}" for i, block in enumerate(model.decoder.blocks)})

    def record(module, inputs, output):
        x = output[0] if isinstance(output, tuple) else output     # a decoder block returns (x, weights, weights)
        norms.append((where[module], float(x.float().norm(dim=-1).mean())))   # (1, L, C) -> (1, L) -> mean

    hooks = [module.register_forward_hook(record) for module in where]
    try:
        model(torch.tensor([src_ids]), torch.tensor([answer_in_ids]))
    finally:
        for hook in hooks:
            hook.remove()
    inputs = iter(["encoder input: embedding·√C + positions", "decoder input: embedding·√C + positions"])
    return [(next(inputs) if name == "embedding" else name, value) for name, value in norms]


@torch.inference_mode()
def copy_parts(model, src_ids: list[int], answer_ids: list[int]):
    """(p_gen (T,), a (T, S), written (T,), copied (T,), p (T,)) of the copy head on the answer, teacher-forced,
    at the position that wrote each answer token: the share written from the vocabulary, the copy distribution
    over source positions, and the token's probability as the written part plus the copied part, whose sum is the
    model's own p (what it outputs).

    A forward pre-hook catches the head's inputs inside Seq2Seq.forward; CopyHead.copy_weights and the head's
    gate then give the parts, so nothing of the mixture is rewritten here."""
    head, caught, T = model.copy, [], len(answer_ids)
    src, answer_in = torch.tensor([src_ids]), torch.tensor([[model.cfg.bos_id] + answer_ids])   # (1, S), (1, T + 1)
    hook = head.register_forward_pre_hook(lambda module, args: caught.append(args))
    try:
        log_p = model(src, answer_in)[0, :T].float()                             # (T, V): log of the mixture
    finally:
        hook.remove()
    h, logits, keys, src_caught, src_mask, fed = caught[0][:6]                   # as Seq2Seq.forward passes them
    h = h[:, :T].float()                                                          # (1, T, C)
    a = head.copy_weights(h, keys.float(), src_mask, src_caught, fed[:, :T])[0][0]   # (T, S)
    p_gen = torch.sigmoid(head.gate(h))[0, :, 0]                                  # (T,)
    target = torch.tensor(answer_ids)[:, None]                                    # (T, 1): what each position wrote
    written = p_gen * logits[0, :T].float().softmax(dim=-1).gather(-1, target)[:, 0]     # (T,)
    copied = (1 - p_gen) * (a * (src == target)).sum(dim=-1)                      # (T, S) -> (T,)
    return p_gen, a, written, copied, log_p.gather(-1, target)[:, 0].exp()
