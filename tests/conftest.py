"""Shared test set-up.

Hypothesis profiles: "ci" (chosen automatically when the CI environment variable is set) runs a bounded
number of examples with no deadline, so the whole suite stays within a few minutes on 2 CPU cores; "dev" is
the default for local runs and explores more. Choose one explicitly with HYPOTHESIS_PROFILE=dev|ci.
"mutation" is what the lesson's break-it exercises run under (minillm.machinery.chapters): ci's examples,
derandomized so an exercise is caught or not the same way every time, and no shrinking (only whether the test
fails matters there, not the smallest failing example).
"""
import os
import pathlib

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("mutation", settings.get_profile("ci"), phases=(Phase.explicit, Phase.generate))
settings.register_profile(
    "dev", max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# Two cores: one intra-op thread per test process keeps timings stable and avoids oversubscription.
torch.set_num_threads(1)

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_TEST_JSON = REPO.parent / "shared" / "data" / "turkish-law-chatbot" / "test.json"


@pytest.fixture
def shared_test_json():
    """Path of the real test split, or a clean skip where ../shared is not beside the repository."""
    if not SHARED_TEST_JSON.is_file():
        pytest.skip(f"reference data not found at {SHARED_TEST_JSON}")
    return SHARED_TEST_JSON


# One tiny tokenizer and one tiny model for every test that needs "some trained tokenizer" or "some model":
# built from a few Turkish sentences inside the test run, so no test depends on files outside tests/.
TINY_TEXTS = ["Anayasa devletin temel kanunudur.", "Egemenlik kayıtsız şartsız milletindir.",
              "Yasama yetkisi Türkiye Büyük Millet Meclisine aittir.", "Yargı yetkisi bağımsız mahkemelerce kullanılır.",
              "Anayasa madde 1 nedir?", "Türkiye Devleti bir Cumhuriyettir.", "Kanun hükmünde kararname nedir?"]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE with 300 tokens (256 bytes, 3 specials, 41 merges) trained on TINY_TEXTS."""
    from minillm.tokenizer import BPETokenizer
    return BPETokenizer.train(TINY_TEXTS * 2, vocab_size=300)


@pytest.fixture
def tiny_model(tiny_tokenizer):
    """A factory: tiny_model(seed=0, **ModelConfig overrides) -> a 1+1-layer Seq2Seq of width 16 (~11k params)."""
    from minillm.model import ModelConfig, Seq2Seq

    def make(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        fields = dict(vocab_size=tiny_tokenizer.vocab_size, d_model=16, n_heads=2, n_encoder_layers=1,
                      n_decoder_layers=1, d_ff=32, max_len=32, dropout=0.0)
        return Seq2Seq(ModelConfig(**{**fields, **overrides}))
    return make
