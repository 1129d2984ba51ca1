"""Hypothesis over the decode paths (a fast version of benchmarks/fuzz.py): every generated or mutated
file gives an image or one clear ValueError, never another exception, a server path or a slow decode."""
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fuzz import classify, dicom_bytes, mutated_files, seed_files  # noqa: E402

from brain_mri.io.images import to_pil_rgb  # noqa: E402

SEEDS = seed_files()
FOLDER = Path(tempfile.mkdtemp(prefix="brain-mri-fuzz-test-"))
FAST = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


@settings(FAST, max_examples=400)
@given(mutated_files(SEEDS))
def test_the_reader_gives_an_image_or_one_clear_message(case):
    outcome, seconds, message = classify(to_pil_rgb, FOLDER, *case)
    assert outcome in ("result", "message"), (outcome, message)
    assert seconds < 2, f"{seconds:.1f} s on a {case[0]} of {len(case[1])} bytes"


@settings(FAST, max_examples=150)
@given(mutated_files([s for s in SEEDS if s[0] in (".nii", ".nii.gz", ".zip", ".dcm")]))
def test_the_scan_reader_gives_a_volume_or_one_clear_message(case):
    from brain_mri.io.volumes import read_volume

    outcome, seconds, message = classify(read_volume, FOLDER, *case)
    assert outcome in ("result", "message"), (outcome, message)
    assert seconds < 2, f"{seconds:.1f} s on a {case[0]} of {len(case[1])} bytes"


@pytest.fixture(scope="module")
def analyse(answering_folder):
    import functools

    app = pytest.importorskip("app")
    from brain_mri import BrainMRIClassifier

    from fuzz import run_handler

    handler = functools.partial(run_handler, app, BrainMRIClassifier.from_pretrained(answering_folder[0]))
    classify(handler, FOLDER, *SEEDS[0])  # the first call fills caches
    # the handler runs the model too, so its bound follows the machine: 2 s, or 3 x the slowest seed file here
    return handler, max(2.0, 3 * max(classify(handler, FOLDER, *seed)[1] for seed in SEEDS))


def test_the_app_handler_gives_a_result_or_one_clear_message(analyse):
    handler, bound = analyse

    @settings(FAST, max_examples=80)
    @given(mutated_files(SEEDS))
    def run(case):
        outcome, seconds, message = classify(handler, FOLDER, *case)
        assert outcome in ("result", "message"), (outcome, message)
        assert seconds < bound, f"{seconds:.1f} s on a {case[0]} of {len(case[1])} bytes (bound {bound:.1f} s)"

    run()


def test_dicom_with_huge_declared_size_is_refused_before_decoding(monkeypatch):
    import pydicom.dataset

    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoding))
    path = FOLDER / "huge.dcm"
    path.write_bytes(dicom_bytes(60000, 60000, pixels=b"\0" * 64))
    t = time.perf_counter()
    with pytest.raises(ValueError, match="huge.dcm declares 60000 x 60000 pixels: too large"):
        to_pil_rgb(path)
    assert time.perf_counter() - t < 1
    path.write_bytes(dicom_bytes(16, 16, frames=4))
    with pytest.raises(ValueError, match="holds 4 frames: it is a whole scan"):
        to_pil_rgb(path)
    from brain_mri.io.volumes import read_volume

    path.write_bytes(dicom_bytes(5000, 5000, frames=3000, pixels=b"\0" * 64))  # as a scan: too many voxels
    with pytest.raises(ValueError, match="huge.dcm declares 5000 x 5000 x 3000 voxels"):
        read_volume(path)
