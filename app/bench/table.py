"""The bench's report as the table `attend bench` prints: training, decoding, the TensorFlow
tutorial measured in the same run, serving, `prepare` and the targets, each part formatted by its
own module."""

from __future__ import annotations

from app.bench.decoding import format_decode
from app.bench.prepare import format_prepare
from app.bench.report import BenchReport
from app.bench.serving import format_serve
from app.bench.targets import format_targets
from app.bench.tutorial import format_tutorial


def format_table(report: BenchReport) -> str:
    lines = [
        *format_training(report),
        f"decoding is timed on {report.serve_model.run or report.serve_model.note}",
        *format_decode(report.decode),
    ]
    first_row = next(iter(report.train.values()))
    lines.append(
        f"decoding peak RSS {report.decode.peak_rss_mb:.0f} MB; matmul peak "
        f"{first_row.matmul_peak_gflops:.0f} GFLOP/s (float32)"
    )
    if report.tutorial:
        lines += format_tutorial(report.tutorial)
    if report.serve_model.bleu is not None:
        tutorial = f"; the tutorial's {report.tutorial.bleu:.2f}" if report.tutorial else ""
        lines.append(
            f"BLEU on {report.serve_model.bleu_sentences:,} test sentences: Attend's greedy export "
            f"{report.serve_model.bleu:.2f}{tutorial}"
        )
    if report.serve:
        lines += format_serve(report.serve)
    if report.prepare.points:
        lines += format_prepare(report.prepare)
    if report.quick:
        lines.append("--quick: a tiny model, so the targets below check the report, not the speed")
    lines += format_targets(report.targets)
    return "\n".join(lines)


def format_training(report: BenchReport) -> list[str]:
    """The training rows (against the tutorial's examples/s measured in the same run, "-" without
    it) and each row's step breakdown."""
    pairs = report.pairs
    lines = [
        f"training pairs: {pairs.train_pairs:,} (dev {pairs.dev_pairs:,}) of at most "
        f"{pairs.max_source_tokens} source / {pairs.max_target_tokens} target tokens",
        f"{'training':<24}{'ex/s':>8}{'× tut.':>8}{'tok/s':>10}{'1st step s':>13}{'GFLOP/s':>9}{'util':>6}"
        f"{'dev loss':>10}{'RSS MB':>8}",
    ]
    tutorial = report.tutorial.train_examples_per_s if report.tutorial else None
    for key, row in report.train.items():
        to_tutorial = f"{row.train_examples_per_s / tutorial:.2f}" if tutorial else "-"
        lines.append(
            f"{key:<24}{row.train_examples_per_s:>8.0f}{to_tutorial:>8}{row.train_target_tokens_per_s:>10.0f}"
            f"{row.time_to_first_step_s:>13.1f}{row.achieved_gflops:>9.1f}"
            f"{row.utilization:>6.0%}{row.dev_loss_after_steps:>10.3f}{row.peak_rss_mb:>8.0f}"
        )
    lines.append(
        "forward+backward ms, parts timed alone: full = encoder + decoder recurrence + readout/loss + rest"
    )
    for key, row in report.train.items():
        parts = row.step_breakdown_ms
        lines.append(
            f"{key:<24}full {parts['full']:.1f} = {parts['encoder']:.1f} + "
            f"{parts['decoder_recurrence']:.1f} + {parts['readout_and_loss']:.1f} + rest"
        )
    return lines
