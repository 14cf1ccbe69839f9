"""The static decode step (minillm.staticstep) against the eager one it rewrites: the same logits at every
step, the same greedy ids, the same sampled ids for a seed, the same beam answers and scores, for models of
every kind the step handles (sinusoidal or rotary positions, a copy head, biases or none, padded sources).

Most tests run the static step uncompiled (torch.compile replaced by the identity: the code path is the same,
only not compiled), so they take seconds. The compiled step itself is checked by
`test_the_compiled_step_gives_the_eager_answers`, which compiles for about a minute on a CPU: it runs when
MINILLM_COMPILE_TESTS=1 (.ci/run sets it) and is skipped otherwise, with that reason.
"""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.batching import pad
from minillm.beam import beam_search
from minillm.decoding import GenerationConfig
from minillm.generation import decode_ids
from minillm.model import ModelConfig, Seq2Seq
from minillm.staticstep import StaticStep

SOURCES = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16, 17], [20, 21, 22]]


def model_of(seed: int, pos: str = "sinusoidal", copy: bool = False, bias: bool = True) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=48, d_model=32, n_heads=2, n_encoder_layers=1, n_decoder_layers=2, d_ff=64,
                      dropout=0.0, max_len=40, tie_embeddings=False, pos=pos, copy=copy, bias=bias)
    model = Seq2Seq(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)          # answers that vary (the default init repeats one token)
    return model


@pytest.fixture
def uncompiled(monkeypatch):
    """torch.compile -> the identity: the static step runs as written, eagerly."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)


KINDS = [dict(), dict(pos="rope"), dict(copy=True), dict(bias=False), dict(pos="rope", copy=True)]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()) or "default")
@torch.inference_mode()
def test_static_step_gives_decode_steps_logits_at_every_position(kind):
    model = model_of(1, **kind)
    src = pad(SOURCES, model.cfg.pad_id)                                   # (4, 7), padded rows
    steps = 12
    static = StaticStep(model, src, length=steps)
    enc_out, src_mask = model.encode(src)
    cache = model.make_cache(enc_out, src_mask, src)
    tokens = torch.randint(3, model.cfg.vocab_size, (src.size(0), steps), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = model.cfg.bos_id
    for t in range(steps):
        want = model.decode_step(tokens[:, t:t + 1], cache)[:, -1].float()   # (B, V)
        got = static.step(tokens[:, t:t + 1], torch.tensor(t))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"step {t}")


def test_a_static_cache_refuses_more_positions_than_the_model_has():
    model = model_of(0)
    with pytest.raises(ValueError, match="longer than the model's max_len = 40"):
        StaticStep(model, pad(SOURCES, 0), length=41)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 50), kind=st.sampled_from(KINDS), strategy=st.sampled_from(["greedy", "sample"]),
       max_new=st.integers(1, 20))
def test_static_greedy_and_sampling_give_the_eager_ids(seed, kind, strategy, max_new):
    """Greedy: the same ids for the whole batch. Sampling: the same ids for a seed, one question at a time;
    in a batch the static step keeps finished rows, so later draws of the shared generator differ (as they
    do between two batchings: `generate`'s docstring)."""
    model = model_of(seed, **kind)
    config = GenerationConfig(strategy=strategy, max_new_tokens=max_new, seed=seed, top_k=10)
    batches = [SOURCES] if strategy == "greedy" else [[source] for source in SOURCES]
    for batch in batches:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch, "compile", lambda fn, **kwargs: fn)
            static = decode_ids(model, batch, dataclasses.replace(config, compile=True))
        assert static == decode_ids(model, batch, config)


@pytest.mark.parametrize("kind", KINDS[:3], ids=["default", "rope", "copy"])
def test_static_beam_search_gives_the_eager_answers_and_scores(kind, uncompiled):
    model = model_of(3, **kind)
    config = GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=15)
    for source in SOURCES:                       # one question at a time: the static batch keeps its rows
        src = pad([source], model.cfg.pad_id)
        with torch.inference_mode():
            eager = beam_search(model, src, config)
            static = beam_search(model, src, dataclasses.replace(config, compile=True))
        assert [h.ids for h in static] == [h.ids for h in eager]
        assert static[0].score == pytest.approx(eager[0].score, abs=1e-5)


def test_a_failed_compile_says_so_in_one_line_and_decodes_eagerly(monkeypatch, capsys):
    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("C++ compiler not found:\ncannot build the kernels")
        return call
    monkeypatch.setattr(torch, "compile", broken)
    model = model_of(5)
    config = GenerationConfig(max_new_tokens=10)
    got = decode_ids(model, SOURCES, dataclasses.replace(config, compile=True))
    assert got == decode_ids(model, SOURCES, config)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["minillm: torch.compile failed (RuntimeError: C++ compiler not found: cannot build the "
                   "kernels); decoding without it"], err


def test_the_compile_setting_is_a_bool():
    with pytest.raises(ValueError, match="GenerationConfig.compile must be True or False"):
        GenerationConfig(compile="yes")


@pytest.mark.skipif(os.environ.get("MINILLM_COMPILE_TESTS") != "1",
                    reason="compiling takes about a minute on a CPU: set MINILLM_COMPILE_TESTS=1 (.ci/run does)")
def test_the_compiled_step_gives_the_eager_answers():
    model = model_of(7, copy=True)
    greedy = GenerationConfig(max_new_tokens=12)
    assert decode_ids(model, SOURCES, dataclasses.replace(greedy, compile=True)) == decode_ids(model, SOURCES, greedy)
    beam = GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=12)
    src = pad(SOURCES[:1], model.cfg.pad_id)
    with torch.inference_mode():
        eager = beam_search(model, src, beam)
        compiled = beam_search(model, src, dataclasses.replace(beam, compile=True))
    assert [h.ids for h in compiled] == [h.ids for h in eager]
    assert compiled[0].score == pytest.approx(eager[0].score, abs=1e-5)
