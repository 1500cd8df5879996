"""The bench's `prepare` phase: one point on a small recombined corpus, and the curve's goals."""

from __future__ import annotations

import pytest

from app.bench.prepare import format_prepare, prepare_curve, run_prepare_phase
from app.bench.report import PrepareCurve, PreparePoint
from app.config import load_config
from tests.conftest import tiny_overrides


def point(pairs: int, seconds: float, corpus_seconds: float, peak_rss_mb: float = 900.0) -> PreparePoint:
    return PreparePoint(
        pairs=pairs,
        generated_mb=pairs / 2000,
        generate_seconds=1.0,
        seconds=seconds,
        corpus_seconds=corpus_seconds,
        tokenizer_seconds=seconds - corpus_seconds,
        peak_rss_mb_after_corpus=800.0,
        shards=1,
        splits={"train": pairs - 2000, "dev": 1000, "test": 1000},
        duplicates=0,
        unique=pairs,
        bad=0,
        tokenizer_sample=1000,
        peak_rss_mb=peak_rss_mb,
    )


def test_the_curve_compares_the_largest_point_with_the_smallest_of_a_million():
    points = [
        point(5_000_000, 231.0, 174.4, 1497.0),
        point(100_000, 59.7, 4.5),
        point(1_000_000, 125.9, 34.5),
    ]
    curve = prepare_curve(points)
    assert [row.pairs for row in curve.points] == [100_000, 1_000_000, 5_000_000]
    written = curve.to_json()["points"][2]
    assert written["seconds_per_million"] == 46.2 and written["corpus_seconds_per_million"] == 34.88
    assert PrepareCurve.from_json(curve.to_json()) == curve
    goals = curve.goals
    assert goals.reference_pairs == 1_000_000 and goals.largest_pairs == 5_000_000
    assert goals.corpus_per_pair_ratio == round(34.88 / 34.5, 3) and goals.linear_goal_met
    assert not goals.total_linear_within_tolerance  # the tokenizers' bounded training is a fixed cost
    assert goals.rss_goal_met and goals.rss_goal_mb == 1907
    lines = format_prepare(curve)
    assert any(line.strip().startswith("5,000,000") for line in lines)
    assert "goal within ±20%: met" in lines[-1] and "goal ≤ 1907 MB: met" in lines[-1]


def test_slower_growth_or_too_much_memory_misses_the_goals():
    goals = prepare_curve([point(20_000, 10.0, 1.0), point(10_000, 4.0, 0.4, 2500.0)]).goals
    assert goals.reference_pairs == 10_000  # no point of a million: the smallest
    assert goals.corpus_per_pair_ratio == 1.25 and not goals.linear_goal_met
    assert goals.peak_rss_mb == 900.0 and goals.rss_goal_met  # the largest point's
    assert not prepare_curve([point(20_000, 10.0, 1.0, 2000.0)] * 2).goals.rss_goal_met
    one = prepare_curve([point(20_000, 10.0, 1.0)])
    assert one.goals is None and one.to_json()["goals"] == {}


def test_the_phase_prepares_a_recombined_corpus_and_reports_it(tmp_path):
    overrides = tiny_overrides(**{"data.shard_pairs": 1000, "tokenizer.max_training_sentences": 500})
    result = run_prepare_phase(load_config("smoke", overrides), tmp_path / "data", 3000, work_dir=tmp_path)
    assert result.pairs == 3000 and result.generated_mb > 0
    assert sum(result.splits.values()) + result.duplicates + result.bad == 3000
    assert result.shards == -(-result.splits["train"] // 1000) >= 2
    assert result.seconds == pytest.approx(result.corpus_seconds + result.tokenizer_seconds, abs=0.011)
    assert result.tokenizer_sample == 500
    assert result.peak_rss_mb >= result.peak_rss_mb_after_corpus > 100
    assert not any(tmp_path.glob("attend-bench-prepare-*"))  # the scratch folder is gone


def test_bench_prepare_only_writes_the_curve_and_its_goals(tmp_path):
    import json

    from tests.test_cli import attend_here

    out = tmp_path / "bench.json"
    arguments = ["bench", "--quick", "--prepare-only", "--preset", "smoke", "--out", str(out)]
    completed = attend_here(*arguments, "--data-dir", str(tmp_path / "data"), *tiny_overrides())
    assert completed.returncode == 0, completed.stderr
    report = json.loads(out.read_text())
    assert [point["pairs"] for point in report["prepare"]["points"]] == [4_000, 8_000]
    assert report["prepare"]["goals"]["largest_pairs"] == 8_000 and "train" not in report
