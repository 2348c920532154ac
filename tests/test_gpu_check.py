"""The prepared device check (benchmarks/gpu_check.py) end to end on CPU with tiny shapes:
every part runs, the tables and the JSON are written, and the time limit holds."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "gpu_check.py"
pytestmark = pytest.mark.slow


def run_check(out: Path, time_limit: float) -> dict:
    command = [sys.executable, str(CHECK), str(out), "--tiny", "--time-limit", str(time_limit)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=time_limit + 60)
    return json.loads((out / "gpu_check.json").read_text())


def test_the_device_check_runs_every_part_on_cpu(tmp_path):
    result = run_check(tmp_path, 600)
    assert {part: v["status"] for part, v in result["parts"].items()} == dict.fromkeys(
        ("eap", "generation", "faithfulness", "workflow"), "ok"
    )
    rows = result["parts"]["eap"]["rows"]
    assert [row["tokens"] for row in rows] == [128, 256, 512]
    for row in rows:
        assert row["how"] == "plain" and row["eap_s"] > 0 and row["floor_s"] > 0
        assert row["predicted_bytes"] == pytest.approx(row["measured_bytes"], rel=0.3)
    generation = result["parts"]["generation"]
    assert generation["static"]["lengths_as_drawn"] and generation["continuous"]["lengths_as_drawn"]
    # on CPU the continuous backend runs at most batch_size (tiny: 4 of 12) rows per step
    assert 1 <= generation["continuous"]["mean_rows"] <= generation["continuous"]["peak_rows"] <= 4
    assert result["parts"]["faithfulness"]["seconds"] > 0
    assert result["parts"]["workflow"]["report_bytes"] > 100_000
    assert (tmp_path / "workflow" / "results" / "report" / "report.html").exists()
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| 512 | plain |" in table and "continuous / static" in table


def test_the_device_check_stops_before_its_time_limit(tmp_path):
    result = run_check(tmp_path, 40)
    assert result["seconds"] < 40
    assert result["parts"]["workflow"]["status"].startswith("skipped")


def test_a_window_run_checkpointed_or_not_at_all_has_a_row_without_its_floor():
    """On the GPU, 16k tokens run checkpointed (no floor: it keeps every activation) or
    not at all; the table leaves those cells blank."""
    spec = importlib.util.spec_from_file_location("gpu_check", CHECK)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    mib = 2**20
    checkpointed = {"tokens": 16384, "how": "checkpointed", "predicted_bytes": 90 * mib}
    checkpointed |= {"eap_s": 2.0, "measured_bytes": 100 * mib}
    assert check.eap_cells(checkpointed) == [
        "16384", "checkpointed", "2.000", "", "", "90", "100", "-10.0%", "",
    ]  # fmt: skip
    skipped = {"tokens": 16384, "how": "skipped", "predicted_bytes": 90 * mib}
    assert check.eap_cells(skipped) == ["16384", "skipped", "", "", "", "90", "", "", ""]
