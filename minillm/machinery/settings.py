"""The decoding settings as the tools present them: one line of help for each GenerationConfig field.

What each setting accepts lives in the course, in ONE table (minillm.decoding.BOUNDS), which
GenerationConfig checks itself against. generate.py builds its flags from BOUNDS and this help; the web API
(minillm.machinery.api) serves BOUNDS with some upper bounds lowered. A test checks that every bound has its help.
"""
from __future__ import annotations

from minillm.decoding import BOUNDS

HELP: dict[str, str] = {
    "strategy": "how to pick each token",
    "max_new_tokens": "answer tokens at most, not counting <bos>/<eos>",
    "temperature": "sample: logits / temperature; < 1 sharper, > 1 flatter",
    "top_k": "sample: keep the k most likely tokens (0 = off)",
    "top_p": "sample: keep the smallest set of tokens with probability >= p (1 = off)",
    "num_beams": "beam: how many partial answers to keep (K)",
    "length_penalty": "beam: alpha in score / length**alpha (0 = raw sum)",
    "repetition_penalty": "every strategy: > 1 makes tokens already in the answer less likely (1 = off)",
    "no_repeat_ngram_size": "every strategy: never repeat an n-gram of this size (0 = off)",
    "seed": "sample: the seed of sampling's own generator (none = a fresh seed)",
}


def describe(name: str) -> str:
    """One line for --help: what the setting does and the range BOUNDS allows."""
    return f"{HELP[name]}; {BOUNDS[name].range_text()}"
