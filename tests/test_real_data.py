"""The duplicate audit on the real Kaggle data (skipped when $BRAIN_MRI_DATA / ../shared/data is absent)."""
import numpy as np
import pytest

from brain_mri.config import CLASS_NAMES
from brain_mri.training.data import prepare_data
from conftest import SHARED_DATA, requires_shared_data

pytestmark = requires_shared_data

CFG = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3,
       "crop_pct": 1.0, "crop_mode": "center"}


@pytest.fixture(scope="module")
def real():
    return prepare_data(str(SHARED_DATA), CFG, progress=False)


def test_real_layout_and_sizes(real):
    assert len(real.test) == 658 and not real.skipped
    n_training = len(real.train) + len(real.val) + real.report.dropped_train
    assert n_training == 5708
    assert len(real.val) / (len(real.val) + len(real.train)) >= 0.15
    assert set(real.val.labels.tolist()) == set(range(len(CLASS_NAMES)))


def test_real_duplicates_found_without_flagging_everything(real):
    r = real.report
    copied = r.test_total - r.leak_free_test
    # about a third of the test images have a copy in Training
    assert 0.25 * r.test_total < copied < 0.45 * r.test_total
    assert r.across["exact"]["train-test"] + r.across["exact"]["val-test"] > 50
    # near copies include exact ones, and the method does not merge distinct slices wholesale
    for split in ("train", "val", "test"):
        assert r.within["near"][split] >= r.within["exact"][split]
    assert r.within["near"]["train"] < 0.2 * len(real.train)
    # most copied test images are "no tumour" (one source, Br35H)
    copied_labels = real.test.labels[~real.test_leak_free]
    assert np.bincount(copied_labels, minlength=4).argmax() == CLASS_NAMES.index("notumor")
    assert r.across["near"]["train-val"] == 0
