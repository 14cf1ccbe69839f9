"""Checkpoints: what is written to disk, how it is written safely, and how it is read back safely.

A checkpoint directory (a training run's directory, or one written by `save_model`) holds:

    tokenizer.bpe            the tokenizer (BPETokenizer.save)
    model.pt                 inference checkpoint: model config + weights (the EMA weights when trained with EMA)
    state-00001200.pt ...    full training state at step 1200 (the last K are kept), for --resume

Every .pt file is a dict of tensors and plain Python values, with {"format": "minillm-checkpoint",
"version": 2, "kind": "model" | "train-state", ...}. Three safety rules:

1. Read with torch.load(weights_only=True): unpickling may call any function a file names (pickle's
   __reduce__), so a file from elsewhere could run code. weights_only only rebuilds tensors and plain
   containers; anything else is refused and we say so.
2. Write atomically (minillm.files.atomic_write): a crash (or a SIGKILL) mid-write leaves the previous
   checkpoint untouched, never half a file.
3. Verify: a SHA-256 of the contents is stored in the file and checked on load. torch.load does not check
   the zip's CRCs, so a flipped byte inside a tensor would otherwise load silently as wrong weights.

The weights saved are those of the plain module (`unwrap`): torch.compile and DistributedDataParallel wrap
the model and prefix every name ("_orig_mod.", "module."), and a checkpoint must load without them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pickle
import random
import re
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minillm.files import atomic_write
from minillm.model import ModelConfig, Seq2Seq
from minillm.optim import EMA
from minillm.tokenizer import BPETokenizer
from minillm.machinery.corpusfile import load_retriever

FORMAT = "minillm-checkpoint"
# Version 2: the output head reads the decoder without the 1/√C factor of version 1 (see Seq2Seq._init_weights).
# A version-1 model would give other logits under this code, so it is refused rather than loaded wrongly.
VERSION = 2
MODEL_FILE = "model.pt"
TOKENIZER_FILE = "tokenizer.bpe"
STATE_RE = re.compile(r"^state-(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot or must not be loaded; the message names the file."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile's wrapper (`._orig_mod`) and DDP's (`.module`)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


# ----------------------------------------------------------------------------------------------------------
# Writing and reading one file

def _digest(obj, h=None) -> str:
    """SHA-256 over a nested structure of dicts, lists, tensors and plain values, in a fixed order."""
    top = h is None
    h = h or hashlib.sha256()
    if isinstance(obj, dict):
        for key in sorted(obj, key=repr):
            if top and key == "sha256":
                continue
            h.update(repr(key).encode())
            _digest(obj[key], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"[{len(obj)}".encode())
        for item in obj:
            _digest(item, h)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, bytes):
        h.update(b"B" + obj)
    else:
        h.update(repr(obj).encode())
    return h.hexdigest() if top else ""


def atomic_save(obj: dict, path) -> Path:
    """torch.save(obj), with the format header and a SHA-256 of the contents, through minillm.files.atomic_write:
    `path` is always the old file or the new one, never a torn one."""
    path = Path(path)
    obj = {"format": FORMAT, "version": VERSION, **obj}
    obj["sha256"] = _digest(obj)
    atomic_write(path, lambda f: torch.save(obj, f))
    return path


def read(path, map_location="cpu") -> dict:
    """Load and verify one checkpoint file; raise CheckpointError naming the file on anything unexpected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):
            raise CheckpointError(
                f"{path}: refused: the file holds pickled objects or code, not only tensors and plain values "
                f"(torch.load(weights_only=True) will not run it). minillm never writes such files; "
                f"do not load it unless you trust its source.") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupted, or not written by torch.save): "
                              f"{str(e).strip().splitlines()[-1][:200]}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint file ({type(e).__name__}: {first})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a minillm checkpoint: expected format {FORMAT!r} version {VERSION}, "
                              f"found {found!r}")
    if obj.get("version") == 1:
        raise CheckpointError(f"{path}: {FORMAT} version 1, written before the output-scale fix: its head scaled the "
                              f"logits by 1/sqrt(d_model), this code does not, so it would answer wrongly; "
                              f"retrain it (this code reads version {VERSION})")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path}: {FORMAT} version {obj.get('version')!r}; this code reads version {VERSION}")
    if obj.get("sha256") != _digest(obj):
        raise CheckpointError(f"{path}: corrupted checkpoint file: its contents do not match the SHA-256 stored in it")
    return obj


# ----------------------------------------------------------------------------------------------------------
# Random-number-generator state (for an exact resume)

def rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             # subtle: a NumPy array is not on weights_only's allow-list; store the key as a tensor instead.
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ----------------------------------------------------------------------------------------------------------
# Directories: inference checkpoints and training states

def save_tokenizer(tokenizer: BPETokenizer, directory) -> str:
    """Write tokenizer.bpe (atomically, by BPETokenizer.save) and return its text, which every .pt file embeds.

    subtle: kept as str, not bytes: pickle protocol 2 writes b"" as a call to the global `bytes`, which
    weights_only=True rightly refuses.
    """
    path = Path(directory) / TOKENIZER_FILE
    tokenizer.save(path)
    return path.read_text(encoding="utf-8")


def model_state(model: nn.Module) -> dict:
    """The uncompiled module's state_dict, copied to the CPU.

    subtle: `.cpu()` of a CPU tensor is the same storage, not a copy; without copy=True a state saved
    inside `ema.applied()` would change back when the training weights are restored.
    """
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


def save_model(directory, model: nn.Module, tokenizer: BPETokenizer, ema=None, **extra) -> Path:
    """Write an inference checkpoint (model.pt + tokenizer.bpe) into `directory`.

    ema: an optim.EMA; when given, its weights are the ones saved (the model itself is left unchanged).
    extra: plain values recorded alongside (step, val_loss, train_config, ...).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plain = unwrap(model)
    tok_text = save_tokenizer(tokenizer, directory)
    if ema is not None:
        with ema.applied(plain):
            weights = model_state(plain)
    else:
        weights = model_state(plain)
    return atomic_save({"kind": "model", "model_config": dataclasses.asdict(plain.cfg), "model": weights,
                        "tokenizer": tok_text, **extra}, directory / MODEL_FILE)


def state_files(directory) -> list[Path]:
    """The training-state files in `directory`, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if STATE_RE.match(p.name))


def save_state(directory, state: dict, keep_last: int) -> Path:
    """Write state-<step>.pt atomically, then delete all but the newest `keep_last` state files."""
    directory = Path(directory)
    path = atomic_save({"kind": "train-state", **state}, directory / f"state-{int(state['step']):08d}.pt")
    for old in state_files(directory)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def finite_weights(state: dict) -> bool:
    """True when every floating-point tensor of a state's weights is finite."""
    return all(bool(torch.isfinite(t).all()) for t in state.get("model", {}).values() if t.is_floating_point())


def latest_state(directory, map_location="cpu", log=print) -> dict | None:
    """The newest training state that reads, verifies and holds finite weights; a damaged newer file is reported
    and skipped, so a crash or a bad disk costs the steps since the previous checkpoint, not the run.
    None when there is no state file; CheckpointError naming every file and its fault when none is usable."""
    faults = []
    for path in reversed(state_files(directory)):
        try:
            state = read(path, map_location)
        except CheckpointError as e:
            faults.append(str(e))
            log(f"warning: {e}; falling back to the previous checkpoint")
            continue
        if not finite_weights(state):
            faults.append(f"{path}: its weights are not finite (a diverged step was saved)")
            log(f"warning: {faults[-1]}; falling back to the previous checkpoint")
            continue
        state["path"] = str(path)
        return state
    if faults:
        raise CheckpointError(f"no usable state-*.pt in {directory}: " + "; ".join(faults))
    return None


def load_tokenizer(directory, ckpt: dict, log=print) -> BPETokenizer:
    """The tokenizer a checkpoint was trained with. The copy inside the checkpoint file is covered by its SHA-256
    and decides: tokenizer.bpe beside it is used when it holds the same text; a damaged or missing file is
    reported and the saved copy used; a readable file with OTHER merges is an error (every id would change)."""
    path = Path(directory) / TOKENIZER_FILE
    saved = ckpt["tokenizer"]
    source = ckpt.get("path", "the checkpoint")
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            text, problem = None, f"unreadable ({e})"
        if text == saved:
            return BPETokenizer.from_text(saved, str(path))
        if text is not None:
            try:
                BPETokenizer.from_text(text, str(path))
            except ValueError as e:
                problem = f"damaged ({e})"
            else:
                raise CheckpointError(f"{path} differs from the tokenizer saved in {source} (edited after training?): "
                                      f"the model's ids follow the saved one; restore the file or delete it")
        log(f"warning: {path} is {problem}; using the copy saved in {source}")
    return BPETokenizer.from_text(saved, f"{source} (embedded tokenizer)")


def load(directory, device="cpu", log=None, retrieval: bool = True) -> tuple[Seq2Seq, BPETokenizer]:
    """(model, tokenizer) ready for generation: the EMA weights where trained with EMA, in eval mode.

    `directory` is a checkpoint directory (model.pt is read; without one, the newest training state) or the
    path of one .pt file (the tokenizer then comes from its directory, or from the copy inside the file).
    A model trained with retrieval gets its retriever (``model.retriever``) from the corpus file the checkpoint
    records, beside it; a missing or different corpus is a CorpusError naming both. ``retrieval=False`` skips
    the corpus: the model then answers from the question alone.
    """
    target = Path(directory)
    if target.is_file():
        path, directory = target, target.parent
    elif (target / MODEL_FILE).is_file():
        path, directory = target / MODEL_FILE, target
    elif state_files(target):
        path, directory = state_files(target)[-1], target
    else:
        raise FileNotFoundError(f"{target}: no {MODEL_FILE} or state-*.pt checkpoint found "
                                f"(expected a directory written by train.py or save_model)")
    ckpt = read(path)
    ckpt["path"] = str(path)
    model_config = dict(ckpt["model_config"])
    if model_config.get("max_src_len") is None and "max_src_len" in ckpt.get("train_config", {}):
        # written before ModelConfig recorded it: the training cut is in the saved TrainConfig
        model_config["max_src_len"] = min(ckpt["train_config"]["max_src_len"], model_config["max_len"])
    model = Seq2Seq(ModelConfig(**model_config))
    model.load_state_dict(ckpt["model"])
    if ckpt["kind"] == "train-state" and ckpt.get("ema") is not None:
        ema = EMA(model)                       # a training state holds the raw weights and, apart, the EMA's
        ema.load_state_dict(ckpt["ema"])
        ema.copy_to(model)
    if retrieval and ckpt.get("retrieval"):
        model.retriever = load_retriever(directory, ckpt["retrieval"], path)
    # warnings go to stderr by default: generate.py prints its answers on stdout
    log = log or (lambda message: print(message, file=sys.stderr))
    return model.to(device).eval(), load_tokenizer(directory, ckpt, log)
