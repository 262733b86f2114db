"""``benchmarks/soak.py``'s measurements: resident memory of this process and its children, and the growth after
warm-up computed from the samples (the soak itself runs for minutes: ``python benchmarks/soak.py --minutes 30``)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("soak", REPO / "benchmarks" / "soak.py")
soak = importlib.util.module_from_spec(spec)
spec.loader.exec_module(soak)


def test_rss_of_this_process_and_of_a_child():
    assert soak.rss_kib(os.getpid()) > 1000  # a Python with torch imported holds more than 1 MiB
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in soak.children(os.getpid())
        assert soak.rss_kib(child.pid) > 0
    finally:
        child.kill()
        child.wait()
    assert soak.rss_kib(child.pid) == 0  # gone


def test_growth_after_warm_up_against_a_hand_computed_series():
    # 0-99 s: start-up growth (left out), then 100 s flat at 1000 MiB, then a rise to 1050 MiB at the end
    samples = [(t, 1024 * (500 + 5 * t if t < 100 else 1000 + max(0, t - 180) * 2.5), 0, 0) for t in range(200)]
    base, end, slope = soak.growth(samples, warmup_s=100, column=1)
    assert base == pytest.approx(1000.0)  # median of the first tenth after warm-up (t = 100..109)
    assert end == pytest.approx(1000 + 2.5 * 14.5)  # median of the last tenth (t = 190..199)
    ts = list(range(100, 200))
    ys = [1000 + max(0, t - 180) * 2.5 for t in ts]
    mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
    ref = 3600 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / sum((t - mt) ** 2 for t in ts)
    assert slope == pytest.approx(ref)
    text, ratio = soak.report(samples, 100, steps=42, seconds=200)
    assert ratio == pytest.approx(end / base - 1) and "42 rollout steps" in text


def test_the_run_is_bounded_by_time_and_not_by_steps():
    args = soak.fit_args(150, Path("/tmp/soak"))
    assert args[args.index("--trainer.max_time") + 1] == "00:00:02:30"
    assert args[args.index("--trainer.max_steps") + 1] == "-1"
