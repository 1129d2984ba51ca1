"""The shipped model (./model) on the real test split: a broken export can never land silently."""
import json

import pytest

from brain_mri.evaluation.evaluate import evaluate_model
from conftest import BUNDLED_MODEL, SHARED_DATA, requires_bundled_model, requires_shared_data

pytestmark = [requires_shared_data, requires_bundled_model]


@pytest.fixture(scope="module")
def result():
    return evaluate_model(str(BUNDLED_MODEL), str(SHARED_DATA), localise=False)  # test_localise covers the CAMs


def test_bundled_model_is_accurate_on_leak_free_test(result):
    assert result["leak_free"]["n"] >= 400
    assert result["leak_free"]["accuracy"] >= 0.95


def test_bundled_model_reproduces_its_card(result):
    card = json.loads((BUNDLED_MODEL / "metrics.json").read_text())["test"]
    for subset in ("full", "leak_free"):
        for k in ("accuracy", "macro_f1", "ece", "nll"):
            assert result[subset][k] == pytest.approx(card[subset]["calibrated"][k], abs=1e-4), (subset, k)
