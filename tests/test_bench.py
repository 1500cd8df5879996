"""The benchmark's arithmetic and its load client (`attend bench --quick` end to end runs in
tests/test_readme.py, which checks its tutorial part with `assert_ratios_to_the_tutorial`). No timing
is asserted."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from app.bench import load_test
from app.bench.decoding import first_clauses, mean_candidates
from app.bench.plan import BenchPlan
from app.bench.report import (
    BenchReport,
    Cpu,
    DecodeReport,
    DecodeSpeed,
    Machine,
    PrepareCurve,
    ServeReport,
    ServingModel,
    Target,
    TokenLimits,
    TrainRow,
    TutorialReport,
)
from app.bench.serving import serve_goals
from app.bench.table import format_table
from app.bench.targets import format_targets, headline_figures, targets
from app.bench.training import steady_state_rate
from app.models.cost import decode_gflop_per_sentence, decode_weight_megabytes


def test_steady_state_rate_is_the_median_window_after_warm_up():
    plan = BenchPlan(warmup_steps=2, windows=3, window_steps=2)
    # step end times: warm-up steps are slow, then windows of 2 steps taking 1 s, 2 s and 0.5 s
    ends = [10.0, 20.0, 20.5, 21.0, 22.0, 23.0, 23.25, 23.5]
    assert steady_state_rate(ends, plan, batch_size=4) == pytest.approx(2 * 4 / 1.0)


# === Load test arithmetic ===
@pytest.mark.parametrize("fraction", [0, 0.1, 0.5, 0.9, 0.99, 1])
def test_percentile_interpolates_as_numpy_does(fraction):
    values = [7.0, 1.0, 3.0, 100.0, 2.5, 9.0, 4.0]
    assert load_test.percentile(values, fraction) == pytest.approx(np.percentile(values, 100 * fraction))


def test_percentile_of_one_value_none_and_bad_fractions():
    assert load_test.percentile([5.0], 0.99) == 5.0
    assert math.isnan(load_test.percentile([], 0.5))
    assert load_test.percentile([1.0, 2.0], 0.5) == 1.5
    with pytest.raises(ValueError, match="0..1"):
        load_test.percentile([1.0], 99)


METRICS_BEFORE = """# HELP attend_batch_size Rows per merged SavedModel call
# TYPE attend_batch_size histogram
attend_batch_size_bucket{le="1.0"} 2.0
attend_batch_size_bucket{le="64.0"} 5.0
attend_batch_size_bucket{le="+Inf"} 5.0
attend_batch_size_count 5.0
attend_batch_size_sum 70.0
# HELP attend_batch_size_created Rows per merged SavedModel call
# TYPE attend_batch_size_created gauge
attend_batch_size_created 1.7954e+09
attend_requests_total{api="rest",method="predict",status="OK"} 70.0
"""


def metrics_page(count: float, total: float) -> str:
    return METRICS_BEFORE.replace("_count 5.0", f"_count {count}").replace("_sum 70.0", f"_sum {total}")


def test_mean_batch_size_is_the_growth_of_the_sum_over_that_of_the_count():
    after = metrics_page(15.0, 470.0)  # 10 batches of 400 rows since
    assert load_test.mean_batch_size(METRICS_BEFORE, after) == pytest.approx(40.0)
    assert load_test.metric_totals(after, "attend_batch_size_count") == 15.0
    assert load_test.metric_totals(after, "attend_batch_size_created") == pytest.approx(1.7954e9)
    assert load_test.metric_totals(after, "attend_requests_total") == 70.0  # labelled samples count
    assert load_test.metric_totals(after, "attend_batch") is None  # whole names only


def test_mean_batch_size_is_none_without_batches():
    assert load_test.mean_batch_size(METRICS_BEFORE, METRICS_BEFORE) is None
    assert load_test.mean_batch_size("", "# no batching: no histogram\n") is None


def test_load_summary_counts_successes_over_the_time_spent_and_failures_by_status():
    answers = [
        load_test._Answer(0, sent=10.0, received=10.1, status=200),
        load_test._Answer(1, sent=10.0, received=10.3, status=200),
        load_test._Answer(2, sent=10.1, received=10.2, status=503),
        load_test._Answer(3, sent=10.3, received=12.0, status=0),
    ]
    summary = load_test.load_summary(answers, clients=2)
    assert summary["requests"] == 4 and summary["errors"] == 2
    assert summary["error_statuses"] == {"0": 1, "503": 1}
    assert summary["seconds"] == pytest.approx(2.0)
    assert summary["requests_per_s"] == pytest.approx(1.0)  # 2 answered with 200 in 2 s
    assert summary["latency_ms_p50"] == pytest.approx(200.0)
    assert summary["latency_ms_p99"] == pytest.approx(298.0)
    empty = load_test.load_summary([], clients=1)
    assert empty["requests_per_s"] == 0.0 and empty["latency_ms_p99"] is None


def test_requests_are_complete_keep_alive_posts_of_utf8_json():
    bodies = [{"instances": ["¿Qué?"]}]
    (request,) = load_test.post_requests("127.0.0.1", 8501, "/v1/models/m:predict", bodies)
    head, body = request.split(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: 127.0.0.1:8501\r\n")
    assert f"Content-Length: {len(body)}".encode() in head and b"close" not in head
    assert json.loads(body) == {"instances": ["¿Qué?"]}


@pytest.mark.parametrize(
    "raw",
    [
        b'HTTP/1.1 200 OK\r\ncontent-length: 11\r\ncontent-type: application/json\r\n\r\n{"a": [12]}',
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{"a": \r\n5;x=y\r\n[12]}\r\n0\r\n\r\n',
    ],
)
def test_responses_are_read_by_length_or_chunks(raw):
    async def read():
        reader = asyncio.StreamReader()
        reader.feed_data(raw + b"HTTP/1.1 ...")  # the next answer on the connection is left unread
        return await load_test._read_response(reader), reader

    (status, headers, body), reader = asyncio.run(read())
    assert status == 200 and json.loads(body) == {"a": [12]}
    assert reader._buffer == b"HTTP/1.1 ..."


# === The report ===
def load_row(clients: int, rate: float, p99: float, batch: float | None, errors: int = 0) -> dict:
    return {
        "clients": clients,
        "requests": 1000,
        "errors": errors,
        "error_statuses": {"503": errors} if errors else {},
        "seconds": 1000 / rate,
        "requests_per_s": rate,
        "latency_ms_p50": p99 / 3,
        "latency_ms_p90": p99 / 2,
        "latency_ms_p99": p99,
        "latency_ms_max": p99 * 1.5,
        "mean_batch_size": batch,
    }


FAKE_SERVE = {
    "export": "greedy",
    "sentences": 64,
    "mean_source_words": 8.0,
    "max_requests": 6000,
    "max_seconds": 20.0,
    "servers": {
        "batching": {
            "flags": ["--max_batch_size=64", "--batch_timeout_micros=2000"],
            "load": [
                load_row(1, 90.0, 14.0, 1.0),
                load_row(8, 400.0, 30.0, 7.2),
                load_row(64, 800.0, 120.0, 55.3),
            ],
            "startup_s": 6.2,
            "peak_rss_mb": 1234.5,
            "exit_status": 0,
        },
        "no_batching": {
            "flags": ["--no-batching"],
            "load": [
                load_row(1, 95.0, 12.0, None),
                load_row(8, 150.0, 80.0, None),
                load_row(64, 160.0, 600.0, None, 3),
            ],
            "startup_s": 6.0,
            "peak_rss_mb": 1100.0,
            "exit_status": 0,
        },
    },
}


def fake_speed(sentences_per_s: float, p50: float) -> dict:
    """A decode row as `decode_speed` writes it: the batch-64 and batch-1 figures given."""
    batches = {
        size: {
            "calls": 2,
            "sentences_per_s": sentences_per_s if size == "64" else 100.0,
            "target_tokens_per_s": 10 * sentences_per_s,
            "mean_output_tokens": 10.0,
            "latency_ms_p50": p50 if size == "1" else 50.0,
            "latency_ms_p90": 1.25 * p50 if size == "1" else 60.0,
            "warmup_s": 0.5,
        }
        for size in ("1", "8", "64", "256")
    }
    return {
        "batches": batches,
        "sentences_per_s_batch64": sentences_per_s,
        "latency_ms_batch1_p50": p50,
        "latency_ms_batch1_p90": 1.25 * p50,
    }


FAKE_DECODE = {
    "buckets": {
        "short": {
            "source_tokens": [1, 10],
            "sentences": 256,
            "mean_source_tokens": 6.7,
            "mean_source_words": 4.8,
        },
        "long": {
            "source_tokens": [21, 40],
            "sentences": 200,
            "mean_source_tokens": 28.8,
            "mean_source_words": 20.5,
        },
    },
    "exports": {
        "greedy": {"load_s": 2.8, "first_call_s": 0.69, "target_vocab": 5000},
        "beam4": {"load_s": 2.0, "first_call_s": 0.65, "target_vocab": 5000},
    },
    "greedy_short": fake_speed(1000.0, 8.0),
    "greedy_long": fake_speed(500.0, 20.0),
    "beam4_short": fake_speed(500.0, 12.0),
    "beam4_long": fake_speed(100.0, 40.0),
    "peak_rss_mb": 1200.0,
}


def decode_report(data: dict) -> DecodeReport:
    return DecodeReport.from_json(data)


def fake_tutorial(sentences_per_s: float = 1892.0, p50: float = 3.3, bleu: float = 8.0) -> TutorialReport:
    """The tutorial as its phase reports it: 580 examples/s and the short bucket's figures given."""
    return TutorialReport(
        train_examples_per_s=580.0,
        bleu=bleu,
        bleu_sentences=1000,
        cpu=Cpu("AMD EPYC", ["avx2", "fma"], 180.0),
        steps=800,
        train_pairs=296,
        time_to_first_step_s=3.1,
        parameters=4_100_000,
        source_vocab=1200,
        target_vocab=1100,
        units=256,
        decode={"short": DecodeSpeed.from_json(fake_speed(sentences_per_s, p50))},
        peak_rss_mb=900.0,
    )


FAKE_TUTORIAL = fake_tutorial()


def assert_ratios_to_the_tutorial(report: dict) -> None:
    """bench.json's `tutorial` object (measured in the same run) and the targets against it: each
    `ratio_to_tutorial` is the report's own Attend figure over the tutorial's figure of the report."""
    tutorial = report["tutorial"]
    short = tutorial["decode"]["short"]
    assert tutorial["greedy_b64_sentences_per_s"] == short["sentences_per_s_batch64"] > 0
    assert tutorial["greedy_b1_p50_ms"] == short["latency_ms_batch1_p50"] > 0
    assert tutorial["train_examples_per_s"] > 0 and 0 <= tutorial["bleu"] <= 100
    assert tutorial["cpu"]["model"] and tutorial["cpu"]["matmul_peak_gflops"] > 0
    assert tutorial["bleu_sentences"] == report["serve_model"]["bleu_sentences"] > 0  # the same sentences
    pairs = {
        "short, batch 64: sentences/s": ("decode_short_greedy_b64_sent_per_s", "greedy_b64_sentences_per_s"),
        "short, batch 1: p50 ms": ("decode_short_greedy_b1_p50_ms", "greedy_b1_p50_ms"),
        "bahdanau training, best precision: examples/s": (
            "train_bahdanau_best_examples_per_s",
            "train_examples_per_s",
        ),
    }
    figures = {ending: (report[attend], tutorial[key]) for ending, (attend, key) in pairs.items()}
    figures["BLEU of the greedy export"] = (report["serve_model"]["bleu"], tutorial["bleu"])
    for ending, (attend, measured) in figures.items():
        (row,) = [row for row in report["targets"] if ending in row["target"]]
        assert row["value"] == attend and row["tutorial"] == measured, row
        assert row["ratio_to_tutorial"] == (round(attend / measured, 3) if measured else None), row


def train_row(**figures: float) -> TrainRow:
    """A training row with `figures` and placeholders for the rest."""
    placeholders = {field.name: 1.0 for field in dataclasses.fields(TrainRow)}
    return TrainRow(**{**placeholders, "step_breakdown_ms": {}, **figures})


def target_rows(
    train: dict[str, TrainRow], decode: dict, tutorial: TutorialReport | None = FAKE_TUTORIAL
) -> dict[str, dict]:
    """The targets as bench.json writes them, by name."""
    report = decode_report(decode)
    return {row["target"]: row for row in map(Target.to_json, targets(train, report, tutorial))}


def test_headline_figures_and_targets_follow_the_short_bucket_and_the_best_bahdanau_row():
    train = {
        "bahdanau/float32": train_row(train_examples_per_s=800.0),
        "bahdanau/mixed_bfloat16": train_row(train_examples_per_s=1200.0),
        "additive_after/mixed_bfloat16": train_row(train_examples_per_s=1500.0),  # not the faithful model
    }
    assert dataclasses.asdict(headline_figures(train, decode_report(FAKE_DECODE))) == {
        "decode_short_greedy_b64_sent_per_s": 1000.0,
        "decode_short_greedy_b64_export": "greedy",
        "decode_short_greedy_b1_p50_ms": 8.0,
        "decode_short_greedy_b1_export": "greedy",
        "decode_short_beam4_over_greedy_b64": 2.0,
        "train_bahdanau_best_examples_per_s": 1200.0,
    }
    rows = target_rows(train, FAKE_DECODE)
    verdicts = {name: row["met"] for name, row in rows.items()}
    assert verdicts == {
        "greedy (greedy), short, batch 64: sentences/s": False,  # 1,000 < 2 × 1,892
        "greedy (greedy), short, batch 1: p50 ms": False,  # 8.0 > 3.3 / 2
        "beam 4 over greedy, short, batch 64: time": True,  # 2.0 ≤ 2.5
        "beam 4 over greedy, long, batch 64: time": False,  # 5.0
        "bahdanau training, best precision: examples/s": True,  # 1,200 ≥ 2 × 580
    }
    # the goals are multiples of the tutorial's figures measured in the same run
    goals = {name: row["goal"] for name, row in rows.items() if "tutorial" in row}
    assert list(goals.values()) == [3784.0, 1.65, 1160.0]
    slower = target_rows(train, FAKE_DECODE, fake_tutorial(sentences_per_s=400.0, p50=20.0))
    assert slower["greedy (greedy), short, batch 64: sentences/s"]["met"]  # 1,000 ≥ 2 × 400
    assert slower["greedy (greedy), short, batch 1: p50 ms"]["ratio_to_tutorial"] == 0.4  # 8 / 20
    # without the tutorial phase (an older report's parts) only the beam targets are left
    assert list(target_rows(train, FAKE_DECODE, None)) == [
        "beam 4 over greedy, short, batch 64: time",
        "beam 4 over greedy, long, batch 64: time",
    ]
    # the XLA export, faster at batch 1 only: each figure comes from the export that does best
    faster = {**FAKE_DECODE, "greedy_xla_short": fake_speed(900.0, 1.5)}
    headline = headline_figures(train, decode_report(faster))
    assert headline.decode_short_greedy_b64_export == "greedy"
    assert headline.decode_short_greedy_b1_export == "greedy_xla"
    assert headline.decode_short_greedy_b1_p50_ms == 1.5
    # the shortlisted export, faster at batch 64: it counts there, named beside
    shortlisted = {**faster, "greedy_shortlist_short": fake_speed(1500.0, 6.0)}
    headline = headline_figures(train, decode_report(shortlisted))
    assert headline.decode_short_greedy_b64_export == "greedy_shortlist"
    assert headline.decode_short_greedy_b64_sent_per_s == 1500.0
    assert headline.decode_short_greedy_b1_export == "greedy_xla"
    fast = {**FAKE_DECODE, "greedy_xla_short": fake_speed(4000.0, 1.5)}
    rows = target_rows(train, fast)
    assert rows["greedy (greedy_xla), short, batch 64: sentences/s"]["met"]
    assert rows["greedy (greedy_xla), short, batch 1: p50 ms"]["met"]
    ratio = rows["greedy (greedy_xla), short, batch 64: sentences/s"]["ratio_to_tutorial"]
    assert ratio == pytest.approx(4000 / 1892, abs=1e-3)
    assert rows["beam 4 over greedy, short, batch 64: time"]["value"] == 8.0  # 4,000 / 500
    both_beams = {**fast, "beam4_xla_short": fake_speed(1000.0, 5.0)}  # the faster beam export counts
    assert headline_figures(train, decode_report(both_beams)).decode_short_beam4_over_greedy_b64 == 4.0
    nothing = DecodeReport(buckets={}, exports={}, speeds={}, peak_rss_mb=1.0)
    assert headline_figures({}, nothing).decode_short_greedy_b64_sent_per_s is None
    assert targets({}, nothing) == []


BENCH_SIZES = {
    "embedding_dim": 256,
    "units": 256,
    "attention_units": 256,
    "readout_units": 256,
    "maxout_pieces": 2,
    "cell": "gru",
    "attention_style": "bahdanau",
}


def test_each_target_carries_what_this_host_allows_it():
    exports = {
        name: {"load_s": 1.0, "first_call_s": 0.1, "model": BENCH_SIZES, "target_vocab": 5000}
        for name in ("greedy", "greedy_shortlist")
    }
    shortlisted = {**fake_speed(1200.0, 9.0), "mean_candidates": {"1": 900.0, "64": 1500.0}}
    decode = {
        **FAKE_DECODE,
        "exports": exports,
        "greedy_shortlist_short": shortlisted,
        "matmul_peak_gflops": 200.0,
        "matvec_gbytes_per_s": 50.0,
    }
    train = {
        "bahdanau/float32": train_row(
            train_examples_per_s=800.0, model_gflop_per_example=0.2, matmul_peak_gflops=300.0
        )
    }
    rows = target_rows(train, decode)
    # batch 64: the shortlist export is the faster, so its 1,500 candidates count; 6.7 + 1 source tokens
    b64 = rows["greedy (greedy_shortlist), short, batch 64: sentences/s"]["bound"]
    gflop = decode_gflop_per_sentence(BENCH_SIZES, 5000, 7.7, 10.0, scored_vocab=1500.0)
    assert b64["value"] == pytest.approx(200 / gflop, abs=0.1)  # about 4,030
    assert b64["reachable"] and b64["share"] == pytest.approx(1200 / b64["value"], abs=1e-3)
    # batch 1: the plain export's 8.0 ms beats the shortlist's 9.0; the whole vocabulary is read
    b1 = rows["greedy (greedy), short, batch 1: p50 ms"]["bound"]
    assert b1["value"] == pytest.approx(decode_weight_megabytes(BENCH_SIZES, 5000, 7.7, 10.0) / 50, abs=1e-3)
    assert b1["value"] > 1.65 and not b1["reachable"]  # ~2.5 ms of weights at 50 GB/s, half 3.3 ms the goal
    training = rows["bahdanau training, best precision: examples/s"]["bound"]
    assert training["value"] == 1500.0 and training["reachable"]  # 300 GFLOP/s / 0.2 GFLOP ≥ 1,160
    assert training["share"] == pytest.approx(800 / 1500, abs=1e-3)
    assert b1["share"] == pytest.approx(b1["value"] / 8.0, abs=1e-3)  # a floor: bound over figure
    assert "bound" not in rows["beam 4 over greedy, short, batch 64: time"]
    lines = format_targets(targets(train, decode_report(decode), FAKE_TUTORIAL))
    assert any(
        line.startswith("target bahdanau training")
        and "this host's ceiling 1,500" in line
        and "not ruled out by the arithmetic" in line
        for line in lines
    )
    assert any(
        line.startswith("target greedy (greedy), short, batch 1") and "out of reach on this host" in line
        for line in lines
    )
    # without the host's rates (an older report) the targets stand alone
    assert all("bound" not in row for row in target_rows({}, FAKE_DECODE).values())


class WordTokenizer:
    """A stand-in for the export's SentencePiece model: each word's id is its length + 3."""

    def tokenize(self, sentences):
        words = tf.strings.split(sentences)
        return tf.cast(words.with_flat_values(tf.strings.length(words.flat_values) + 3), tf.int32)


def test_mean_candidates_apply_a_saved_shortlist_table_per_batch():
    frequent = tf.Variable([10, 11])
    translations = np.zeros([20, 2], np.int32)
    translations[5] = [12, 13]  # "ab" (id 5) translates to 12 or 13
    translations[6] = [13, 14]
    table = [tf.Variable(translations), frequent]  # in either order
    sentences = ["ab", "ab abc", "x"]
    # one by one: the reserved ids 0–3, the frequent 10, 11, and the sources' translations
    expected_singles = [4 + 2 + 2, 4 + 2 + 3, 4 + 2 + 0]
    sizes = mean_candidates(table, WordTokenizer(), sentences)
    assert sizes == {"1": pytest.approx(sum(expected_singles) / 3, abs=0.05), "64": 4 + 2 + 3}


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("Y lloró Jesús.", ["Y lloró Jesús."]),
        (
            "Y dijo Dios: Sea la luz, y fué la luz.",
            ["Y dijo Dios: Sea la luz, y fué la luz.", "Y dijo Dios:"],
        ),
        ("Hola,mundo", ["Hola,mundo"]),  # a clause ends at punctuation followed by a space
    ],
)
def test_the_short_bucket_also_draws_on_first_clauses(sentence, expected):
    assert first_clauses(sentence) == expected


def test_serve_goals_compare_the_most_clients_with_the_offline_decode():
    goals = serve_goals(ServeReport.from_json(FAKE_SERVE), decode_report(FAKE_DECODE))
    assert goals.clients == 64 and goals.requests_per_s == 800.0
    assert goals.ratio_to_offline_batch64 == pytest.approx(0.8) and goals.throughput_goal_met
    assert goals.p99_limit_ms == pytest.approx(32.0) and not goals.p99_goal_met  # 120 ms
    assert goals.mean_latency_ms_at_throughput_goal == pytest.approx(1000 * 64 / 700, abs=0.1)
    assert goals.batching_speedup == pytest.approx(5.0) and goals.batching_goal_met
    assert goals.errors == 3
    batching_only = {**FAKE_SERVE, "servers": {"batching": FAKE_SERVE["servers"]["batching"]}}
    assert serve_goals(ServeReport.from_json(batching_only), decode_report(FAKE_DECODE)) is None


def fake_report(
    quick: bool = False, tutorial: TutorialReport = FAKE_TUTORIAL, bleu: float = 12.0
) -> BenchReport:
    """A whole report around FAKE_DECODE, FAKE_SERVE and FAKE_TUTORIAL, as `run_bench` assembles it."""
    train = {
        "bahdanau/float32": train_row(
            train_examples_per_s=800.0,
            train_target_tokens_per_s=8000.0,
            time_to_first_step_s=4.2,
            achieved_gflops=170.0,
            utilization=0.42,
            dev_loss_after_steps=3.3,
            peak_rss_mb=1200.0,
            matmul_peak_gflops=400.0,
            step_breakdown_ms={
                "full": 82.0,
                "encoder": 16.0,
                "decoder_recurrence": 33.0,
                "readout_and_loss": 30.0,
            },
        )
    }
    decode, serve = decode_report(FAKE_DECODE), ServeReport.from_json(FAKE_SERVE)
    serve_model = ServingModel(
        run=None,
        note="the bench model after 800 training steps",
        steps=800,
        dev_loss=4.2,
        bleu=bleu,
        bleu_sentences=1000,
    )
    return BenchReport(
        machine=Machine(cpus=2, processor="x86_64", python="3.12.3", tensorflow="2.21.0"),
        preset="bench",
        overrides=["train.max_source_tokens=12"],
        quick=quick,
        pairs=TokenLimits(12, 12, 296, 40, 400, 50),
        train=train,
        config={"name": "bench"},
        serve_model=serve_model,
        decode=decode,
        serve=dataclasses.replace(serve, goals=serve_goals(serve, decode)),
        prepare=PrepareCurve(points=[], goals=None),
        headline=headline_figures(train, decode),
        targets=targets(train, decode, tutorial, serve_model),
        tutorial=tutorial,
    )


def test_the_table_shows_decoding_and_serving_rows_goals_and_peak_rss():
    report = fake_report()
    table = format_table(report)
    lines = table.splitlines()
    rows = [line.split() for line in lines if line.startswith(("greedy_", "beam4_"))]
    assert len(rows) == 4 * 4  # export × bucket, each at batch 1, 8, 64 and 256
    assert ["greedy_short", "64", "1000", "10000", "50.0", "60.0", "10.0", "0.50"] in rows
    assert "short: 256 sentences of 1–10 source tokens (6.7 tokens, 4.8 words on average)" in table
    assert "greedy: loaded in 2.8 s, first call 0.69 s" in table
    assert (
        "target greedy (greedy), short, batch 64: sentences/s: 1,000 = 0.53 × the tutorial's 1,892" in table
    )
    assert "target beam 4 over greedy, long, batch 64: time: 5 (goal ≤ 2.5): missed" in table
    assert "--quick" not in table
    assert "--quick: a tiny model" in format_table(fake_report(quick=True))
    training = next(line.split() for line in lines if line.startswith("bahdanau/float32 "))
    assert training[1:3] == ["800", "1.38"]  # examples/s and their ratio to the tutorial's 580
    # the tutorial measured in the same run, beside Attend's rows: the CPU, its training, its decoding
    assert "CPU: AMD EPYC (avx2 yes, fma yes, avx512f no, avx512_bf16 no, amx_tile no, amx_bf16 no)" in table
    assert "matmul peak 180 GFLOP/s" in table
    assert "trained 800 steps on 296 pairs: 580 examples/s" in table
    assert ["tutorial_short", "64", "1892", "18920", "50.0", "60.0", "10.0", "0.50"] in [
        line.split() for line in lines
    ]
    assert "BLEU on 1,000 test sentences: Attend's greedy export 12.00; the tutorial's 8.00" in table
    assert (
        "target BLEU of the greedy export, 1000 test sentences: 12 = 1.50 × the tutorial's 8 (goal ≥ 12): met"
        in table
    )
    without = format_table(dataclasses.replace(report, tutorial=None))
    assert "tutorial_short" not in without
    assert next(line.split() for line in without.splitlines() if line.startswith("bahdanau/"))[2] == "-"
    assert "decoding peak RSS 1200 MB" in table
    header = next(line for line in lines if line.startswith("server "))
    assert " ".join(header.split()) == "server clients req/s p50 ms p90 ms p99 ms mean batch errors"
    rows = [line.split() for line in lines if line.startswith(("batching ", "no_batching "))]
    assert [(row[0], row[1]) for row in rows] == [
        ("batching", "1"),
        ("batching", "8"),
        ("batching", "64"),
        ("no_batching", "1"),
        ("no_batching", "8"),
        ("no_batching", "64"),
    ]
    assert rows[2] == ["batching", "64", "800", "40.0", "60.0", "120.0", "55.3", "0"]
    assert rows[5] == ["no_batching", "64", "160", "200.0", "300.0", "600.0", "-", "3"]
    assert "batching: --max_batch_size=64 --batch_timeout_micros=2000" in table
    assert "0.80 × offline batch-64 (1000 sent/s; goal ≥ 0.70: met)" in table
    assert "p99 120.0 ms against 32.0 ms = 4 × batch-1 p50 (missed" in table
    assert "batching 5.0× (goal ≥ 1.5×: met); errors 3" in table
    assert "server peak RSS: batching 1234 MB, no_batching 1100 MB" in table  # 1234.5 rounds to even


# === bench.json ===
RUN6 = Path(__file__).parents[1] / "docs" / "bench-2026-12-04-run6.json"


def test_a_report_reads_back_to_the_same_json_text():
    """bench.json's keys, nesting and order are what docs and scripts read: run 6's report, read into
    the dataclasses and written again, is the same text (derived figures recomputed agree)."""
    text = RUN6.read_text()
    report = BenchReport.from_json(json.loads(text))
    assert json.dumps(report.to_json(), indent=2) + "\n" == text
    assert report.serve.goals.clients == 64 and report.targets[0].bound.value == 3194.4
    assert report.decode.speed("greedy_shortlist", "short").mean_candidates == {"1": 1017.0, "64": 1715.2}


def test_a_decode_phase_and_a_trained_runs_serving_model_read_back_the_same():
    """The decode phase of the default run (every export, with shortlist candidates) and the
    `--serve-run` shape of `serve_model` (the run and its sizes, no note)."""
    text = (RUN6.parent / "bench-2026-12-04-default-run-decoding.json").read_text()
    decode = DecodeReport.from_json(json.loads(text))
    assert json.dumps(decode.to_json()) + "\n" == text  # the phase's line, as it printed it
    assert len(decode.speeds) == 6 * 3 and decode.speed("beam4_xla", "long") is not None
    run = json.loads((RUN6.parent / "bench-2026-11-22-run4-default-run-decoding.json").read_text())
    assert ServingModel(**run["serve_model"]).to_json() == run["serve_model"]
    assert list(ServingModel(None, "the bench model", 5, 7.1).to_json()) == [
        "run",
        "note",
        "steps",
        "dev_loss",
    ]


def test_every_ratio_to_the_tutorial_divides_by_the_figures_measured_in_the_same_report():
    report = fake_report().to_json()
    assert_ratios_to_the_tutorial(report)
    assert report["tutorial"]["greedy_b64_sentences_per_s"] == 1892.0
    bleu = next(row for row in report["targets"] if row["target"].startswith("BLEU"))
    assert bleu["ratio_to_tutorial"] == 1.5 and bleu["goal"] == 12.0  # 12 / 8, and 1.5 × 8
    # a tiny tutorial's BLEU of 0 (--quick): the BLEU target keeps the figures, without a ratio
    untrained = fake_report(tutorial=fake_tutorial(bleu=0.0), bleu=0.3).to_json()
    assert_ratios_to_the_tutorial(untrained)
    bleu = next(row for row in untrained["targets"] if row["target"].startswith("BLEU"))
    assert bleu["tutorial"] == 0.0 and bleu["ratio_to_tutorial"] is None
    line = next(line for line in format_targets(targets_of(untrained)) if line.startswith("target BLEU"))
    assert "0.3 against the tutorial's 0 (goal ≥ 0): met" in line


def targets_of(report: dict) -> list[Target]:
    return [Target.from_json(row) for row in report["targets"]]


def test_an_assembled_report_has_the_full_reports_keys_and_round_trips():
    written = fake_report(quick=True).to_json()
    full = json.loads(RUN6.read_text())
    assert [key for key in written if key != "tutorial"] == list(full)  # run 6 had no tutorial phase
    assert list(written).index("tutorial") == list(written).index("prepare") + 1
    assert list(written["decode"]) == [
        "buckets",
        "exports",
        "greedy_short",
        "greedy_long",
        "beam4_short",
        "beam4_long",
        "peak_rss_mb",
        "matmul_peak_gflops",
        "matvec_gbytes_per_s",
    ]
    for part in ("pairs", "machine"):
        assert list(written[part]) == list(full[part]), part
    assert list(written["serve_model"]) == [*full["serve_model"], "bleu", "bleu_sentences"]
    assert list(written["serve"]) == list(full["serve"])
    assert list(written["serve"]["goals"]) == list(full["serve"]["goals"])
    assert list(written["train"]["bahdanau/float32"]) == list(full["train"]["bahdanau/float32"])
    assert [*written["targets"][0], "bound"] == list(full["targets"][0])  # no host rates here: no bound
    assert BenchReport.from_json(json.loads(json.dumps(written))) == fake_report(quick=True)


# === The load client and the server process, on loopback ===
class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        sentence = json.loads(body)["instances"][0]
        status = 503 if sentence == "refuse" else 200
        answer = json.dumps({"predictions": [{"translation": sentence.upper()}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_the_clients_keep_their_connections_and_stop_at_the_request_bound():
    connections = []

    class Handler(_EchoHandler):
        def setup(self):  # once per connection
            super().setup()
            connections.append(self.client_address)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        bodies = [{"instances": ["uno"]}, {"instances": ["dos"]}, {"instances": ["refuse"]}]
        requests = load_test.post_requests("127.0.0.1", port, "/v1/models/m:predict", bodies)
        summary = load_test.run_load("127.0.0.1", port, requests, clients=4, max_requests=30, max_seconds=30)
    finally:
        server.shutdown()
        server.server_close()
    assert summary["requests"] == 30 and summary["clients"] == 4
    assert summary["errors"] == 10 and summary["error_statuses"] == {"503": 10}  # every third request
    assert len(connections) == 4  # one kept-alive connection per client
    assert 0 < summary["latency_ms_p50"] <= summary["latency_ms_p90"] <= summary["latency_ms_p99"]


FAKE_SERVER = """
import signal, sys, time
print("Serving model 'm'", flush=True)
print("  REST: http://127.0.0.1:45678/v1/models/m", flush=True)
if sys.argv[1] == "hang":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(0.05)
"""


@pytest.mark.slow
def test_a_server_process_is_ready_on_its_rest_line_and_always_stopped():
    with load_test.ServerProcess([sys.executable, "-c", FAKE_SERVER, "drain"]) as server:
        assert (server.rest, server.host, server.port) == ("http://127.0.0.1:45678", "127.0.0.1", 45678)
        assert server.peak_rss_mb() > 1
        process = server.process
    assert server.exit_status == 0 and process.returncode == 0
    failing = load_test.ServerProcess([sys.executable, "-c", FAKE_SERVER, "drain"])
    with pytest.raises(RuntimeError, match="boom"), failing:  # stopped even when the load test fails
        raise RuntimeError("boom")
    assert failing.exit_status == 0
    hanging = load_test.ServerProcess([sys.executable, "-c", FAKE_SERVER, "hang"], stop_seconds=0.5)
    with hanging:
        pass
    assert hanging.exit_status == -9  # killed once SIGTERM was not enough
    assert hanging.peak_rss_mb() is None  # gone


@pytest.mark.slow
def test_a_server_that_exits_before_it_is_ready_is_reported_with_its_log():
    command = [sys.executable, "-c", "import sys; sys.exit('no model here')"]
    with pytest.raises(RuntimeError, match=r"exited \(1\) before it was ready:\nno model here"):
        load_test.ServerProcess(command).__enter__()
