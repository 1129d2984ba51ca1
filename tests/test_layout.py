"""The package's shape: its layering (import-linter's contracts in pyproject.toml), what each entry point loads
at run time (serving stays clear of the training stack, ``train.py --help`` and its refusal of bad flags, of
torch) and small modules and functions."""
import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

TRAINING_STACK = {"datasets", "accelerate", "sklearn"}


def _top_modules_after(code: str) -> set:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


def test_the_classifier_does_not_load_the_training_stack(trained_folder, sample_image):
    out, _ = trained_folder
    assert not _top_modules_after("from brain_mri import BrainMRIClassifier") & TRAINING_STACK
    predicted = _top_modules_after(
        f"from brain_mri import BrainMRIClassifier\nBrainMRIClassifier.from_pretrained({str(out)!r}).predict({str(sample_image)!r})")
    assert "timm" in predicted and not predicted & TRAINING_STACK


@pytest.mark.parametrize("flags", [["--help"], ["--data", "d", "--output-dir", "o", "--box-loss", "-1"],
                                   ["--data", "d", "--output-dir", "o", "--box-loss", "1", "--cutmix", "1"],
                                   ["--data", "d", "--output-dir", "o", "--push-to-hub", "../up"]])
def test_train_help_and_bad_flags_end_before_anything_heavy_loads(flags):
    loaded = _top_modules_after(
        f"import runpy, sys\nsys.argv = ['train.py', *{flags!r}]\n"
        "try:\n    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit as e:\n"
        "    assert e.code == (0 if '--help' in sys.argv else 2), e.code")
    assert "brain_mri" in loaded and not loaded & ({"torch", "timm"} | TRAINING_STACK)


def test_training_defaults_are_the_config_defaults():
    import train
    from brain_mri.config import TrainConfig

    args = vars(train.parse_args(["--data", "d", "--output-dir", "o"]))
    assert TrainConfig(**train._tuples(args)) == TrainConfig(data="d", output_dir="o")


def test_the_layers_keep_their_contracts():
    """Serving and io never import training or evaluation, io nothing of serving, the package never ``app``:
    ``lint-imports`` reads the contracts from pyproject.toml."""
    here = Path(sys.executable).parent / "lint-imports"
    cmd = str(here) if here.is_file() else shutil.which("lint-imports")
    assert cmd, "lint-imports not found: pip install -e '.[test]'"
    r = subprocess.run([cmd, "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def test_modules_and_functions_stay_small():
    files = sorted((ROOT / "brain_mri").rglob("*.py")) + [ROOT / "app.py", ROOT / "train.py"]
    assert len(files) > 40 and (ROOT / "brain_mri/serving/inference.py") in files
    for f in files:
        source = f.read_text()
        name = str(f.relative_to(ROOT))
        assert len(source.splitlines()) <= 350, name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 60, f"{name}: {node.name}"
