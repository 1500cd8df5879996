"""The benchmark's arithmetic, and `attend bench --quick` end to end (shape and sanity, never speed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.bench import BenchPlan, model_gflop_per_example, steady_state_rate
from tests.conftest import BIBLE_SAMPLE

MODEL = {
    "embedding_dim": 2,
    "units": 3,
    "attention_units": 4,
    "readout_units": 5,
    "maxout_pieces": 2,
    "cell": "gru",
    "attention_style": "bahdanau",
}


def test_flop_count_follows_the_layer_sizes():
    # per source token: 2 directions × 3·(2·3 + 3·3) + 2·3·4 = 114; bridge 9
    # per target token: attention 3·4 + 1·(4 + 6) = 22; cell 3·((2 + 6)·3 + 9) = 99;
    # readout (3 + 6 + 2)·5·2 + 5·7 = 145
    expected = 3 * 2 * (1 * 114 + 9 + 1 * (22 + 99 + 145)) / 1e9
    assert model_gflop_per_example(MODEL, 6, 7, 1.0, 1.0) == pytest.approx(expected)
    luong = model_gflop_per_example({**MODEL, "attention_style": "luong"}, 6, 7, 1.0, 1.0)
    assert luong == pytest.approx(expected - 3 * 2 * 3 * 6 * 3 / 1e9)  # the cell no longer reads c_i


def test_steady_state_rate_is_the_median_window_after_warm_up():
    plan = BenchPlan(warmup_steps=2, windows=3, window_steps=2)
    # step end times: warm-up steps are slow, then windows of 2 steps taking 1 s, 2 s and 0.5 s
    ends = [10.0, 20.0, 20.5, 21.0, 22.0, 23.0, 23.25, 23.5]
    assert steady_state_rate(ends, plan, batch_size=4) == pytest.approx(2 * 4 / 1.0)


@pytest.mark.slow
def test_quick_bench_writes_a_sane_report(tmp_path):
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "bench",
            "--quick",
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path / "data"),
            "data.corpus=tsv",
            f"data.tsv_path={BIBLE_SAMPLE}",
            "data.dev_size=60",
            "data.test_size=60",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["train"]) == {
        "bahdanau/float32",
        "bahdanau/mixed_bfloat16",
        "luong/float32",
        "luong/mixed_bfloat16",
    }
    for row in report["train"].values():
        assert (
            row["train_examples_per_s"] > 0 and row["train_target_tokens_per_s"] > row["train_examples_per_s"]
        )
        assert 0 < row["utilization"] < 1 and row["matmul_peak_gflops"] > row["achieved_gflops"] > 0
        assert (
            row["time_to_first_step_s"] > 0 and row["peak_rss_mb"] > 100 and row["dev_loss_after_steps"] > 0
        )
    for name in ("greedy_short", "greedy_long", "beam4_short", "beam4_long"):
        speed = report["serve"][name]
        assert speed["sentences_per_s_batch64"] > 0
        assert 0 < speed["latency_ms_batch1_p50"] <= speed["latency_ms_batch1_p90"]
    assert report["serve"]["peak_rss_mb"] > 100
    assert report["serve_model"]["steps"] == 5 and report["serve_model"]["dev_loss"] > 0  # its own model
    assert (
        "bahdanau/float32" in completed.stdout
        and "sent/s" in completed.stdout
        and "decoder recurrence" in completed.stdout
    )
