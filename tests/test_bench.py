"""The benchmark's arithmetic (`attend bench --quick` end to end runs in tests/test_readme.py)."""

from __future__ import annotations

import pytest

from app.bench import BenchPlan, steady_state_rate


def test_steady_state_rate_is_the_median_window_after_warm_up():
    plan = BenchPlan(warmup_steps=2, windows=3, window_steps=2)
    # step end times: warm-up steps are slow, then windows of 2 steps taking 1 s, 2 s and 0.5 s
    ends = [10.0, 20.0, 20.5, 21.0, 22.0, 23.0, 23.25, 23.5]
    assert steady_state_rate(ends, plan, batch_size=4) == pytest.approx(2 * 4 / 1.0)
