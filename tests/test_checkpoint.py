"""Specification of minillm/checkpoint.py: safe reading, atomic writing, EMA weights, unwrapping, RNG state."""
import os
import pickle
import random

import numpy as np
import pytest
import torch

from minillm.machinery import checkpoint as ck
from minillm.model import ModelConfig
from minillm.optim import EMA

TEXTS = ["Anayasa madde 1 nedir?", "Türkiye Devleti bir Cumhuriyettir.", "Kanun hükmünde kararname nedir?"]


def ids(tokenizer):
    src = torch.tensor([tokenizer.encode("Anayasa madde 1")])
    return src, torch.tensor([[1] + tokenizer.encode("Türkiye")])


def test_save_model_load_round_trip(tmp_path, tiny_tokenizer, tiny_model):
    model = tiny_model().train()
    ck.save_model(tmp_path, model, tiny_tokenizer, step=7)
    loaded, tok2 = ck.load(tmp_path)
    assert not loaded.training                       # ready for generation
    assert tok2.encode(TEXTS[1]) == tiny_tokenizer.encode(TEXTS[1])
    model.eval()
    src, tgt = ids(tiny_tokenizer)
    torch.testing.assert_close(loaded(src, tgt), model(src, tgt), rtol=0, atol=0)
    raw = torch.load(tmp_path / ck.MODEL_FILE, weights_only=True)  # the contract: weights_only reads it
    assert raw["format"] == "minillm-checkpoint" and raw["version"] == ck.VERSION == 2 and raw["step"] == 7
    assert ModelConfig(**raw["model_config"]) == model.cfg


def test_save_model_with_ema_saves_ema_weights_and_leaves_model_alone(tmp_path, tiny_tokenizer, tiny_model):
    model = tiny_model()
    ema = EMA(model, decay=0.5, warmup=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)                                # shadow = w + 0.5, model = w + 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ck.save_model(tmp_path, model, tiny_tokenizer, ema=ema)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    loaded, _ = ck.load(tmp_path)
    for name, p in loaded.named_parameters():
        torch.testing.assert_close(p, ema.shadow[name])
        assert not torch.equal(p, before[name])


def test_compiled_and_ddp_wrappers_are_unwrapped(tmp_path, tiny_tokenizer, tiny_model):
    model = tiny_model()
    # wrapping alone compiles nothing; backend="eager" also imports no inductor (whose import of torch.utils.mkldnn
    # used the deprecated torch.jit.script_method: 14 DeprecationWarnings in `make test`)
    compiled = torch.compile(model, backend="eager")
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    assert ck.unwrap(compiled) is model
    ck.save_model(tmp_path, compiled, tiny_tokenizer)
    raw = ck.read(tmp_path / ck.MODEL_FILE)
    assert set(raw["model"]) == set(model.state_dict())  # no "_orig_mod." prefix
    loaded, _ = ck.load(tmp_path)                    # loads into a plain, uncompiled Seq2Seq
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_atomic_write_keeps_previous_file_when_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "state-00000001.pt"
    ck.atomic_save({"kind": "train-state", "step": 1, "w": torch.ones(3)}, path)

    def torn_save(obj, f):                           # writes half a file, then the "machine dies"
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt
    monkeypatch.setattr(ck.torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        ck.atomic_save({"kind": "train-state", "step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(ck.read(path)["w"], torch.ones(3))   # old content intact
    assert os.listdir(tmp_path) == [path.name]              # no temporary file left behind


def test_truncated_or_flipped_file_is_a_clear_error_and_previous_state_is_used(tmp_path):
    for step in (1, 2):
        ck.save_state(tmp_path, {"step": step, "w": torch.full((1000,), float(step))}, keep_last=3)
    newest = tmp_path / "state-00000002.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])              # truncated (a disk-full or a copy cut short)
    with pytest.raises(ck.CheckpointError, match="state-00000002.pt.*truncated or corrupted"):
        ck.read(newest)
    messages = []
    state = ck.latest_state(tmp_path, log=messages.append)
    assert state["step"] == 1 and torch.equal(state["w"], torch.full((1000,), 1.0))
    assert "state-00000002.pt" in messages[0]
    # one flipped byte inside the tensor data: torch.load alone accepts it; the stored SHA-256 does not
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    newest.write_bytes(bytes(flipped))
    with pytest.raises(ck.CheckpointError, match="state-00000002.pt.*(SHA-256|corrupted)"):
        ck.read(newest)


class Payload:
    """Unpickling this calls os.system: the classic malicious-checkpoint payload."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_payload_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"format": ck.FORMAT, "version": 2, "x": Payload(marker)}, protocol=2))
    zipped = tmp_path / "zipped.pt"
    torch.save({"format": ck.FORMAT, "version": 2, "model": {"w": torch.ones(1)}, "x": Payload(marker)}, zipped)
    for path in (plain, zipped):
        with pytest.raises(ck.CheckpointError, match=f"{path.name}.*refused.*pickled"):
            ck.read(path)
    assert not marker.exists()                       # the payload never ran


def test_wrong_format_or_version_names_file_and_expectation(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(1)}, other)
    with pytest.raises(ck.CheckpointError, match="other.pt.*expected format 'minillm-checkpoint' version 2"):
        ck.read(other)
    future = tmp_path / "future.pt"
    torch.save({"format": ck.FORMAT, "version": 99}, future)
    with pytest.raises(ck.CheckpointError, match="future.pt.*version 99"):
        ck.read(future)
    old = tmp_path / "old.pt"                         # written by the first minillm, with the 1/√C head
    torch.save({"format": ck.FORMAT, "version": 1}, old)
    with pytest.raises(ck.CheckpointError, match="old.pt.*version 1.*output-scale fix.*retrain"):
        ck.read(old)
    with pytest.raises(FileNotFoundError, match="no model.pt or state"):
        ck.load(tmp_path / "nowhere")


def test_keeps_only_the_last_k_states(tmp_path):
    for step in range(1, 6):
        ck.save_state(tmp_path, {"step": step}, keep_last=2)
    assert [p.name for p in ck.state_files(tmp_path)] == ["state-00000004.pt", "state-00000005.pt"]
    assert ck.latest_state(tmp_path)["step"] == 5


def test_load_train_state_uses_ema_weights(tmp_path, tiny_tokenizer, tiny_model):
    model = tiny_model()
    ema = EMA(model, decay=0.5, warmup=False)
    with torch.no_grad():
        model.embed.weight.mul_(3.0)
    ema.update(model)
    ck.save_tokenizer(tiny_tokenizer, tmp_path)
    ck.save_state(tmp_path, {"step": 3, "model_config": model.cfg.__dict__.copy(), "model": ck.model_state(model),
                             "ema": ema.state_dict(), "tokenizer": tiny_tokenizer.to_text()}, keep_last=1)
    loaded, _ = ck.load(tmp_path)                    # no model.pt: the newest training state is used
    torch.testing.assert_close(loaded.embed.weight, ema.shadow["embed.weight"])
    assert not torch.equal(loaded.embed.weight, model.embed.weight)


def test_rng_state_round_trip_through_a_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    ck.atomic_save({"rng": ck.rng_state()}, tmp_path / "r.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    ck.set_rng_state(ck.read(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
