"""The long-run memory check (src/memcheck.py): its analysis, and a short real run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import TINY, compose_cfg
from seglab import memcheck


def test_analysis_flags_a_leak_and_not_noise_or_warmup():
    rng = np.random.default_rng(0)
    steps = list(range(0, 2000, 20))
    warm = [400.0 + min(s, 200) * 0.5 for s in steps]  # grows while warming up, then flat
    noisy = [r + rng.normal(0, 2) for r in warm]
    noisy[60] += 80  # one allocator spike
    flat = memcheck.analyse(list(zip(steps, noisy, strict=True)), warmup_steps=200)
    assert abs(flat["growth_mb"]) < 3 and abs(flat["slope_mb_per_1000_steps"]) < 5
    assert flat["rss_max_mb"] > 550 and flat["samples"] == 90

    leak = [r + 0.05 * s for s, r in zip(steps, noisy, strict=True)]  # 50 MB per 1000 steps
    grown = memcheck.analyse(list(zip(steps, leak, strict=True)), warmup_steps=200)
    assert grown["slope_mb_per_1000_steps"] == pytest.approx(50, abs=5)
    assert grown["growth_mb"] == pytest.approx(0.05 * (1990 - 200) * 0.9, rel=0.15)
    with pytest.raises(ValueError, match="memory samples after"):
        memcheck.analyse(list(zip(steps, noisy, strict=True)), warmup_steps=1900)


def test_memcheck_run_traces_a_real_training(tmp_path):
    cfg = compose_cfg(
        "memcheck",
        [
            *TINY,
            "trainer.max_epochs=-1",  # TINY caps epochs; memcheck counts steps
            "memcheck.steps=24",
            "memcheck.every_n_steps=1",
            "memcheck.warmup_steps=4",
            "memcheck.max_growth_mb=1000",
        ],
        tmp_path / "mem",
    )
    result = memcheck.run(cfg)
    saved = json.loads((tmp_path / "mem" / "memory.json").read_text())
    assert saved == result
    assert [s for s, _ in result["steps_rss_mb"]] == list(range(1, 25))  # max_steps honoured
    assert all(100 < r < 10_000 for _, r in result["steps_rss_mb"])
    assert result["flat"] is True and result["samples"] == 21
    assert (tmp_path / "mem" / "checkpoints" / "last.ckpt").is_file()
