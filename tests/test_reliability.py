"""Fast versions of the reliability benchmarks: the app under load and a flood, and the CPU thread setting."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

pytest.importorskip("gradio")


def test_load_flood_memory_and_temporary_files(answering_folder, tmp_path):
    """benchmarks/load.py, small: no failure, no mixed answer, a flood gets "busy", files are deleted."""
    report = tmp_path / "load.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "load.py"), "--model", str(answering_folder[0]),
                        "--users", "4", "--requests", "3", "--series", "20", "--flood", "40", "--queue-size", "4",
                        "--cache-delete", "1,2", "--no-baselines", "--json", str(report)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["load"]["failures"] == 0 and result["load"]["mismatches"] == 0
    flood = result["flood"]
    assert flood["busy"] > 0 and flood["hung"] == 0 and flood["other_errors"] == 0
    assert flood["answered"] + flood["busy"] == 40 and flood["messages"] == ["Queue is full! Please try again."]
    series = result["series"]
    assert series["rss_growth_mb"] < 50
    assert series["files_after_cache_deletion"] <= series["files_before"]  # 20 answers' files are gone again


def test_threads_follow_the_environment_then_the_cpus_this_process_may_use(monkeypatch):
    from brain_mri import configure_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("BRAIN_MRI_THREADS", "1")
        assert configure_threads() == 1 == torch.get_num_threads()
        monkeypatch.delenv("BRAIN_MRI_THREADS")
        assert configure_threads() == max(1, len(os.sched_getaffinity(0)) // 2) == torch.get_num_threads()
        monkeypatch.setenv("BRAIN_MRI_THREADS", "two")
        with pytest.raises(ValueError, match="BRAIN_MRI_THREADS must be a whole number"):
            configure_threads()
    finally:
        torch.set_num_threads(before)
