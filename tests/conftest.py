"""Shared test set-up.

Hypothesis profiles: "ci" (chosen automatically when the CI environment variable is set) runs a bounded
number of examples with no deadline, so the whole suite stays within a few minutes on 2 CPU cores; "dev" is
the default for local runs and explores more. Choose one explicitly with HYPOTHESIS_PROFILE=dev|ci.
"""
import os
import pathlib

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
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
