"""The `prepare` phase of `attend bench`: what `attend prepare` costs as the corpus grows.

Each point is its own process (`python -m app.bench prepare --pairs N`): it writes N pairs recombined
from the configured corpus's real pairs (`app.data.synthetic`; the Bible by default, no download
beyond the cached database), then times the two halves of `attend prepare` on them — the streamed
corpus preparation and the tokenizers (trained on a bounded sample) — and reads its peak RSS.

The goals: time grows linearly (the corpus step's seconds per million pairs at the largest point
within ±20 % of those at the smallest point of at least a million pairs; the whole is reported
beside it, where the tokenizers' bounded training is a fixed cost), and peak RSS at the largest
point ≤ 2 GB.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from app.bench.report import PrepareCurve, PrepareGoals, PreparePoint

PREPARE_SIZES = (100_000, 1_000_000, 5_000_000)
QUICK_PREPARE_SIZES = (4_000, 8_000)
# --quick checks the report, not the speed: SentencePiece's pruning down to the quick 500 pieces takes
# about a minute on 44k of these long pairs, so its sample is cut to this
QUICK_PREPARE_OVERRIDES = ("tokenizer.max_training_sentences=2000",)
LINEAR_TOLERANCE = 0.2
RSS_GOAL_MB = 2e9 / 2**20  # 2 GB in the MiB the bench reports (1,907)
LINEAR_FROM = 1_000_000  # the reference point: the smallest of at least this many pairs (else the smallest)
GENERATOR_SEED = 2015


def run_prepare_phase(config, data_dir: Path, pairs: int, work_dir: Path | None = None) -> PreparePoint:
    """Generates `pairs` pairs in a scratch folder and prepares them as `attend prepare` would."""
    from app.bench.host import peak_rss_mb

    with tempfile.TemporaryDirectory(prefix="attend-bench-prepare-", dir=work_dir) as scratch:
        started = time.perf_counter()
        tsv = generate_corpus(config, data_dir, Path(scratch) / "recombined.tsv", pairs)
        generated_s = time.perf_counter() - started
        result = {"pairs": pairs, "generated_mb": round(tsv.stat().st_size / 2**20, 1)}
        result["generate_seconds"] = round(generated_s, 2)
        result |= _time_preparation(_generated_config(config, tsv), Path(scratch) / "data")
    return PreparePoint(**result, peak_rss_mb=round(peak_rss_mb(), 1))


def generate_corpus(config, data_dir: Path, path: Path, pairs: int) -> Path:
    """`pairs` lines recombined from the configured corpus's pairs (its Bible translations or TSV)."""
    from app.data.bible import fetch_bible_db, read_bible_pairs
    from app.data.corpus import read_tsv_records
    from app.data.synthetic import seed_pairs, write_recombined_tsv

    data = config.data
    if data.corpus == "bible":
        database = fetch_bible_db(data_dir / "cache", log=lambda *_: None)
        raw = (
            (source, target)
            for _, source, target in read_bible_pairs(database, data.source_bible, data.target_bible)
        )
    else:
        raw = (
            (record.source, record.target) for record in read_tsv_records(Path(data.tsv_path), swap=data.swap)
        )
    return write_recombined_tsv(seed_pairs(raw), path, pairs, seed=GENERATOR_SEED)


def _generated_config(config, tsv: Path):
    data = dataclasses.replace(config.data, corpus="tsv", tsv_path=str(tsv), swap=False, max_pairs=None)
    return dataclasses.replace(config, data=data)


def _time_preparation(config, data_dir: Path) -> dict:
    """Seconds of the corpus step and of the tokenizers (as `attend prepare` runs them), with the
    peak RSS after the corpus step, the shards and the splits."""
    from app.bench.host import peak_rss_mb
    from app.data.corpus import prepare_corpus
    from app.data.prepare import prepare_tokenizers

    quiet = lambda *_: None  # noqa: E731
    started = time.perf_counter()
    corpus = prepare_corpus(config, data_dir, log=quiet)
    corpus_s = time.perf_counter() - started
    corpus_rss = peak_rss_mb()
    started = time.perf_counter()
    prepare_tokenizers(config, corpus, log=quiet)
    tokenizer_s = time.perf_counter() - started
    report = corpus.report
    return {
        "seconds": round(corpus_s + tokenizer_s, 2),
        "corpus_seconds": round(corpus_s, 2),
        "tokenizer_seconds": round(tokenizer_s, 2),
        "peak_rss_mb_after_corpus": round(corpus_rss, 1),
        "shards": len(corpus.train_files),
        "splits": report["splits"],
        "duplicates": report["duplicates"],
        "unique": report["unique"],
        "bad": sum(found["count"] for found in report["bad"].values()),
        "tokenizer_sample": _sample_size(config.tokenizer.max_training_sentences, report["splits"]["train"]),
    }


def _sample_size(limit: int | None, train_pairs: int) -> int:
    return train_pairs if limit is None else min(limit, train_pairs)


def prepare_curve(points: list[PreparePoint]) -> PrepareCurve:
    """The points by size, and the goals checked on them."""
    rows = sorted(points, key=lambda point: point.pairs)
    return PrepareCurve(rows, prepare_goals(rows))


def prepare_goals(rows: list[PreparePoint]) -> PrepareGoals | None:
    """Linear growth (the corpus step, and the whole for comparison) and peak RSS at the largest point;
    None with fewer than two points."""
    if len(rows) < 2:
        return None
    largest = rows[-1]
    reference = next((row for row in rows if row.pairs >= LINEAR_FROM and row is not largest), rows[0])
    corpus_ratio = largest.corpus_seconds_per_million / reference.corpus_seconds_per_million
    total_ratio = largest.seconds_per_million / reference.seconds_per_million
    return PrepareGoals(
        largest_pairs=largest.pairs,
        reference_pairs=reference.pairs,
        corpus_per_pair_ratio=round(corpus_ratio, 3),
        total_per_pair_ratio=round(total_ratio, 3),
        linear_tolerance=LINEAR_TOLERANCE,
        linear_goal_met=abs(corpus_ratio - 1) <= LINEAR_TOLERANCE,
        total_linear_within_tolerance=abs(total_ratio - 1) <= LINEAR_TOLERANCE,
        peak_rss_mb=largest.peak_rss_mb,
        rss_goal_mb=round(RSS_GOAL_MB),
        rss_goal_met=largest.peak_rss_mb <= RSS_GOAL_MB,
    )


def format_prepare(curve: PrepareCurve) -> list[str]:
    """The curve's rows and its goals, for the bench table."""
    lines = [
        "attend prepare on recombined Bible pairs (corpus step + tokenizers on a bounded sample):",
        f"{'pairs':>10}{'seconds':>9}{'s/M':>8}{'corpus s':>10}{'corpus s/M':>12}{'tok. s':>8}"
        f"{'RSS MB':>8}{'shards':>8}{'train':>11}",
    ]
    for row in curve.points:
        lines.append(
            f"{row.pairs:>10,}{row.seconds:>9.1f}{row.seconds_per_million:>8.1f}"
            f"{row.corpus_seconds:>10.1f}{row.corpus_seconds_per_million:>12.1f}"
            f"{row.tokenizer_seconds:>8.1f}{row.peak_rss_mb:>8.0f}{row.shards:>8}"
            f"{row.splits['train']:>11,}"
        )
    goals = curve.goals
    if goals:
        lines.append(
            f"linear: corpus s/M at {goals.largest_pairs:,} = {goals.corpus_per_pair_ratio:.2f} × at "
            f"{goals.reference_pairs:,} (goal within ±{goals.linear_tolerance:.0%}: "
            f"{'met' if goals.linear_goal_met else 'missed'}; the whole: "
            f"{goals.total_per_pair_ratio:.2f} ×); peak RSS {goals.peak_rss_mb:.0f} MB (goal ≤ "
            f"{goals.rss_goal_mb} MB: {'met' if goals.rss_goal_met else 'missed'})"
        )
    return lines
