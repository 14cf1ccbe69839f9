"""Specification of the pointer-generator head (minillm.copying, See et al. 2017), against a reference written
out loop by loop below, and inside the model: cached decoding equals the full forward pass with it too."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.copying import CopyHead
from minillm.model import ModelConfig, Seq2Seq

TOL = dict(rtol=1e-5, atol=1e-6)


def softmax(scores):
    top = max(scores)
    weights = [math.exp(x - top) for x in scores]
    return [w / sum(weights) for w in weights]


def reference_mixture(head: CopyHead, h, logits, enc_out, src_ids, src_mask, tgt_ids):
    """p(w) = p_gen · softmax(logits)_w + (1 - p_gen) · Σ_{i: src_i = w} a_i, one position at a time. a_i's score:
    q·k/√C, + follow when src_{i-1} is the token fed at t, + stay when src_i is; then a first softmax, and the
    final one after subtracting cover × (the first softmaxes of the earlier positions, summed)."""
    B, T, V = logits.shape
    S = src_ids.size(1)
    out = torch.empty(B, T, V, dtype=torch.float64)
    keys = head.k_proj(enc_out).double()
    follow, stay, cover = head.follow.item(), head.stay.item(), head.cover.item()
    for b in range(B):
        covered = [0.0] * S
        for t in range(T):
            q = head.q_proj(h[b, t]).double()
            scores = [float(q @ keys[b, i]) / math.sqrt(h.size(-1))
                      + (follow if i > 0 and src_ids[b, i - 1] == tgt_ids[b, t] else 0.0)
                      + (stay if src_ids[b, i] == tgt_ids[b, t] else 0.0)
                      if src_mask[b, i] else -math.inf for i in range(S)]
            first = softmax(scores)
            a = softmax([x - cover * c for x, c in zip(scores, covered)])
            covered = [c + f for c, f in zip(covered, first)]
            p_gen = 1 / (1 + math.exp(-float(head.gate(h[b, t]))))
            p = p_gen * torch.softmax(logits[b, t].double(), dim=-1)
            for i in range(S):
                p[src_ids[b, i]] += (1 - p_gen) * a[i]
            out[b, t] = p
    return out


def random_case(seed, B, T, S, V, C=8):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = CopyHead(C)
    h, enc_out = torch.randn(B, T, C, generator=gen), torch.randn(B, S, C, generator=gen)
    logits = torch.randn(B, T, V, generator=gen) * 3
    src_ids = torch.randint(0, V, (B, S), generator=gen)
    lengths = torch.randint(1, S + 1, (B,), generator=gen)
    src_mask = torch.arange(S)[None, :] < lengths[:, None]                   # (B, S), at least one real token
    tgt_ids = torch.randint(0, V, (B, T), generator=gen)
    tgt_ids[:, 0] = src_ids[:, 0]                                            # a follow-on match in every row
    return head, h, logits, enc_out, src_ids, src_mask, tgt_ids


@given(st.integers(0, 2**16), st.integers(1, 3), st.integers(1, 4), st.integers(1, 6), st.integers(2, 9))
@settings(max_examples=20)
def test_the_head_is_the_mixture_of_see_et_al(seed, B, T, S, V):
    head, h, logits, enc_out, src_ids, src_mask, tgt_ids = random_case(seed, B, T, S, V)
    with torch.no_grad():
        log_p, _ = head(h, logits, head.keys(enc_out), src_ids, src_mask, tgt_ids)
        expected = reference_mixture(head, h, logits, enc_out, src_ids, src_mask, tgt_ids)
    assert log_p.shape == (B, T, V) and log_p.dtype == torch.float32
    torch.testing.assert_close(log_p.exp().double(), expected, **TOL)
    torch.testing.assert_close(log_p.logsumexp(-1), torch.zeros(B, T), **TOL)     # a distribution: sums to 1


def test_padding_is_never_copied():
    """Token 7 stands only at padded positions: it gets exactly its share of the vocabulary distribution."""
    head, h, logits, enc_out, _, _, tgt_ids = random_case(0, 1, 3, 4, 9)
    src_ids = torch.tensor([[1, 2, 7, 7]])
    src_mask = torch.tensor([[True, True, False, False]])
    tgt_ids = torch.tensor([[7, 2, 1]])                                          # 7 follows 7: masked all the same
    with torch.no_grad():
        p = head(h, logits, head.keys(enc_out), src_ids, src_mask, tgt_ids)[0].exp()
        p_gen = torch.sigmoid(head.gate(h))                                      # (1, 3, 1)
        vocab = logits.softmax(-1)
    torch.testing.assert_close(p[..., 7], (p_gen * vocab)[..., 7], **TOL)
    assert bool((p[..., 1] + p[..., 2] > (p_gen * vocab)[..., 1] + (p_gen * vocab)[..., 2]).all())


@pytest.mark.parametrize("bias, expect_copy", [(-40.0, True), (40.0, False)])
def test_the_gate_chooses_between_copying_and_writing(bias, expect_copy):
    head, h, logits, enc_out, src_ids, src_mask, tgt_ids = random_case(3, 2, 2, 5, 9)
    with torch.no_grad():
        head.gate.weight.zero_()
        head.gate.bias.fill_(bias)                                               # p_gen = σ(bias): 0 or 1
        p = head(h, logits, head.keys(enc_out), src_ids, src_mask, tgt_ids)[0].exp()
        a, _ = head.copy_weights(h, head.keys(enc_out), src_mask, src_ids, tgt_ids)  # (B, T, S)
    if expect_copy:
        copied = torch.zeros_like(p).scatter_add_(2, src_ids[:, None, :].expand_as(a), a)
        torch.testing.assert_close(p, copied, **TOL)
        outside = torch.ones(9, dtype=torch.bool)
        outside[src_ids.unique()] = False
        assert float(p[..., outside].max()) < 1e-12 if bool(outside.any()) else True
    else:
        torch.testing.assert_close(p, logits.softmax(-1), **TOL)


def copy_model(seed=0):
    torch.manual_seed(seed)
    return Seq2Seq(ModelConfig(vocab_size=40, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=2,
                               d_ff=32, max_len=16, dropout=0.0, copy=True)).eval()


def batch(seed, B=3, S=6, T=5):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(3, 40, (B, S), generator=gen)
    src[0, 4:] = 0                                                               # padding in one row
    tgt = torch.randint(3, 40, (B, T), generator=gen)
    tgt[:, 0] = 1
    return src, tgt


@given(st.integers(0, 2**16))
@settings(max_examples=8)
def test_cached_decoding_with_a_copy_head_equals_the_full_forward(seed):
    model = copy_model(seed)
    src, tgt = batch(seed)
    with torch.no_grad():
        full = model(src, tgt)                                                   # (B, T, V) log-probabilities
        cache = model.make_cache(*model.encode(src), src)
        steps = torch.cat([model.decode_step(tgt[:, t:t + 1], cache) for t in range(tgt.size(1))], dim=1)
    torch.testing.assert_close(steps, full, **TOL)
    torch.testing.assert_close(full.logsumexp(-1), torch.zeros(full.shape[:2]), **TOL)


def test_reordering_the_cache_reorders_what_is_copied():
    model = copy_model(1)
    src, tgt = batch(1)
    index = torch.tensor([2, 0, 0, 1])
    with torch.no_grad():
        full = model(src[index], tgt[index])
        cache = model.make_cache(*model.encode(src), src)
        model.decode_step(tgt[:, :2], cache)
        cache.reorder(index)
        rest = model.decode_step(tgt[index][:, 2:], cache)
    torch.testing.assert_close(rest, full[:, 2:], **TOL)


def test_a_copy_model_needs_the_source_ids_to_decode():
    model = copy_model()
    src, _ = batch(0)
    with pytest.raises(ValueError, match="src_ids"):
        model.make_cache(*model.encode(src))


def train_copy_task(copy: bool, steps: int = 300, seed: int = 0):
    """A tiny model learns to repeat 5 source tokens drawn from ids 10-999 (each one rare, as the law's words
    are), then is asked to repeat tokens 1000-1099, which it never saw anywhere. Returns the share of those unseen
    tokens it writes back (teacher-forced argmax at each position)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Seq2Seq(ModelConfig(vocab_size=1100, d_model=32, n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
                                d_ff=64, max_len=16, dropout=0.0, copy=copy))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def batch(low, high, n=32, length=5):
        body = torch.randint(low, high, (n, length), generator=gen)
        src = torch.cat([body, torch.full((n, 1), 2)], dim=1)                       # tokens, <eos>
        tgt_in = torch.cat([torch.ones(n, 1, dtype=torch.long), body], dim=1)       # <bos>, tokens
        tgt_out = torch.cat([body, torch.full((n, 1), 2)], dim=1)                   # tokens, <eos>
        return src, tgt_in, tgt_out

    for _ in range(steps):
        src, tgt_in, tgt_out = batch(10, 1000)
        loss = torch.nn.functional.cross_entropy(model(src, tgt_in).transpose(1, 2), tgt_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    src, tgt_in, tgt_out = batch(1000, 1100, n=64)
    with torch.no_grad():
        guess = model(src, tgt_in).argmax(-1)                                         # (B, T)
    return float((guess[:, :-1] == tgt_out[:, :-1]).float().mean())


def test_follow_on_points_after_the_token_just_written():
    """With q and k silenced, the only score left is the follow-on bonus: all weight on the positions whose
    previous source token is the one just fed."""
    head = CopyHead(4)
    with torch.no_grad():
        head.q_proj.weight.zero_()
        head.stay.zero_()
        head.cover.zero_()
        src_ids = torch.tensor([[5, 6, 7, 5, 8]])
        a, _ = head.copy_weights(torch.randn(1, 2, 4), torch.randn(1, 5, 4), torch.ones(1, 5, dtype=torch.bool),
                                 src_ids, torch.tensor([[5, 9]]))                # fed: 5, then 9 (in no source)
    e = math.exp(head.follow.item())
    torch.testing.assert_close(a[0, 0], torch.tensor([1, e, 1, 1, e]) / (3 + 2 * e), **TOL)   # after each 5
    torch.testing.assert_close(a[0, 1], torch.full((5,), 0.2), **TOL)           # nothing follows a 9: uniform


def test_a_copy_head_repeats_tokens_it_never_saw_and_a_plain_decoder_cannot():
    """The reason the head exists: the law holds words the training answers never used. Pointing at a source
    position works for any token; writing a token from the vocabulary needs that token to have been trained."""
    with_copy, without = train_copy_task(copy=True), train_copy_task(copy=False)
    assert with_copy > 0.8, with_copy
    assert without < 0.1, without


@given(st.integers(0, 2**16), st.integers(1, 3))
@settings(max_examples=6)
def test_beam_search_and_greedy_with_a_copy_head_equal_their_references(seed, K):
    """The cache holds the copy keys, the source ids and the coverage; beam search reorders all three. The batched,
    cached search must equal the single-question search that re-runs the whole model at every step."""
    from minillm.batching import pad
    from minillm.beam import beam_search, beam_search_one
    from minillm.decoding import GenerationConfig
    from minillm.generation import decode_ids
    model = copy_model(seed)
    questions = [[5, 6, 7, 8, 2], [9, 10, 9, 2], [11, 12, 2]]
    config = GenerationConfig(strategy="beam", num_beams=K, max_new_tokens=6)
    with torch.inference_mode():
        batched = beam_search(model, pad(questions, 0), config)
        greedy = decode_ids(model, questions, GenerationConfig(max_new_tokens=6))
        slow = decode_ids(model, questions, GenerationConfig(max_new_tokens=6, use_cache=False))
    for question, got in zip(questions, batched):
        want = beam_search_one(model, question, config)
        assert (got.ids, got.finished) == (want.ids, want.finished)
        assert got.score == pytest.approx(want.score, rel=1e-4, abs=1e-4)
    assert greedy == slow
