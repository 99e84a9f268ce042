"""The GPU evidence kit (benchmarks/gpu/run.sh) at its --smoke size on the CPU, so that it cannot rot between the
rare occasions a GPU is lent: every part runs, and what it writes holds measured numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the GPU evidence kit end to end on CPU: ~80 s

REPO = Path(__file__).resolve().parents[1]


def _positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_gpu_kit_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "HYPERCLONE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "run.sh"), "--smoke", "--no-install",
                           "--work", str(tmp_path / "work")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((out / "gpu_kit.json").read_text())
    assert results["smoke"] is True and results["errors"] == []
    env_rec = results["environment"]
    assert env_rec["torch"] and env_rec["device_type"] == "cpu" and env_rec["device"]
    assert _positive(results["peak"]["tflops"])
    assert results["corpus"]["tokens"] > 0

    # (a) four loops (bare and hyperclone train, each eager and compiled), each with a measured rate, an MFU and
    # finite losses
    tp = results["throughput"]
    assert tp["model"]["params"] > 0 and tp["model"]["flops_per_token"] > 0
    for key in ("bare_eager", "bare_compile", "hyperclone_train", "hyperclone_train_compile"):
        row = tp["variants"][key]
        assert "error" not in row, row
        assert _positive(row["tokens_per_s"]) and _positive(row["mfu"]) and _positive(row["mfu_vs_reference"])
        assert row["losses"] and all(math.isfinite(v) for v in row["losses"])
    hc, compiled = tp["variants"]["hyperclone_train"], tp["variants"]["hyperclone_train_compile"]
    for row, run in ((hc, "throughput-hyperclone"), (compiled, "throughput-hyperclone-compile")):
        assert row["intervals_used"] >= 1 and all(_positive(v) for v in row["interval_rates"])
        assert (out / "runs" / run / "metrics.jsonl").is_file()
    assert "--compile" in compiled["command"] and "--compile" not in hc["command"]
    # the same run compiled: the same losses (fp32; tests/test_train.py checks compiled == eager step by step)
    assert compiled["losses"] == pytest.approx(hc["losses"], rel=1e-4)

    # (b) the ladder point: every run finished with finite losses; growth kept the function
    lad = results["ladder"]
    assert lad["tokens_per_run"] > 0 and lad["grown"]["params"] > lad["small"]["params"]
    assert any((c.get("calibration") or {}).get("tokens_per_s", 0) > 0 for c in lad["candidates"])
    names = ["small", *(f"{arm}-s{s}" for arm in ("random", "grown") for s in lad["seeds"])]
    assert set(lad["runs"]) == set(names)
    for name in names:
        run = lad["runs"][name]
        assert run["status"] == "ok", (name, run["status"])
        assert run["tokens_trained"] == lad["tokens_per_run"]
        assert len(run["curve"]) >= 2 and all(math.isfinite(p["val_loss"]) for p in run["curve"])
        assert run["train_losses"] and all(math.isfinite(v) for v in run["train_losses"])
        assert _positive(run["tokens_per_s"])
        assert (out / "runs" / f"ladder-{name}" / "metrics.jsonl").is_file()
    summary = lad["summary"]
    assert summary["complete"]
    assert all(math.isfinite(v) for arm in ("grown", "random") for v in summary["final_val_loss"][arm]["values"])
    check = summary["function_preserved_check"]
    assert all(abs(v - check["small_final_val_loss"]) < 1e-3 for v in check["grown_val_loss_at_step_0"])
    assert lad["grow"]["function_preserving"] is True

    # the report quotes the measured numbers; the plot is a real PNG
    report = (out / "gpu_kit.md").read_text()
    assert "SMOKE RUN" in report and env_rec["torch"] in report
    assert f"{tp['variants']['hyperclone_train']['tokens_per_s']:,.0f}" in report
    assert f"{compiled['tokens_per_s']:,.0f}" in report and "no --compile flag" not in report
    assert f"{lad['runs']['grown-s0']['final_val_loss']:.4f}" in report
    png = (out / "gpu_kit.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not (tmp_path / "work").exists()  # the scratch folder is removed
