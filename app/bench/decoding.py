"""The bench's `decode` phase: what a user of the SavedModel pays per request, by source length,
batch size and search (`app.bench.targets` sets them against the TensorFlow NMT tutorial's figures).

Sentences are bucketed by their number of source subword tokens (the export's own SentencePiece
model counts them, end marker excluded), because decoding cost follows length and the tutorial's
conversational sentences are short: the Bible's dev and test verses, and the first clause of each
(cut after , ; : . ? !), so that the short bucket is never empty.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import statistics
import time
from pathlib import Path

import tensorflow as tf

from app.bench.host import matmul_peak_gflops, matvec_gbytes_per_s, peak_rss_mb
from app.bench.plan import BenchPlan
from app.bench.report import BatchSpeed, Bucket, DecodeReport, DecodeSpeed, ExportInfo

BUCKETS = {"short": (1, 10), "medium": (11, 20), "long": (21, 40)}  # source subword tokens, inclusive
BATCH_SIZES = (1, 8, 64, 256)
SENTENCES_PER_BUCKET = 256
SEED = 1234
BLEU_BATCH = 64


def first_clauses(sentence: str) -> list[str]:
    """`sentence` and its first clause, cut after the first , ; : . ? or ! that is not its end."""
    head = re.split(r"(?<=[,;:.?!])\s+", sentence.strip(), maxsplit=1)[0]
    return [sentence] if head == sentence else [sentence, head]


def bucket_sources(
    corpus_dir: Path, source_model: Path, per_bucket: int = SENTENCES_PER_BUCKET, seed: int = SEED
) -> dict[str, list[str]]:
    """Up to `per_bucket` source sentences per bucket of `BUCKETS`, drawn with `seed` from the dev and
    test sides of `corpus_dir` and their first clauses; lengths counted by `source_model`."""
    import tensorflow_text  # noqa: F401  (the SentencePiece ops)

    from app.data.tokenizer import read_side

    sentences = sorted(
        {
            text
            for split in ("dev", "test")
            for sentence in read_side(corpus_dir / f"{split}.tsv", 0)
            for text in first_clauses(sentence)
            if text
        }
    )
    tokenizer = tensorflow_text.SentencepieceTokenizer(model=source_model.read_bytes())
    lengths = tokenizer.tokenize(tf.constant(sentences)).row_lengths().numpy()
    chosen = {}
    for name, (low, high) in BUCKETS.items():
        candidates = [s for s, length in zip(sentences, lengths, strict=True) if low <= length <= high]
        chosen[name] = random.Random(seed).sample(candidates, min(per_bucket, len(candidates)))
    return chosen


def run_decode_phase(
    export_dir: Path, exports: tuple[str, ...], sources: dict[str, list[str]], plan: BenchPlan
) -> DecodeReport:
    """Each SavedModel of `exports` (folders of `export_dir`) reloaded as a serving program would, and
    timed on each bucket of `sources` at each of `BATCH_SIZES`."""
    import tensorflow_text

    source_model = export_dir / exports[0] / "assets" / "source.model"
    source_tokenizer = tensorflow_text.SentencepieceTokenizer(model=source_model.read_bytes())
    infos, speeds = {}, {}
    for name in exports:
        infos[name], export_speeds = time_export(export_dir / name, sources, plan, source_tokenizer)
        speeds |= {(name, bucket): speed for bucket, speed in export_speeds.items()}
    buckets = {
        bucket: describe_bucket(bucket, sentences, source_tokenizer) for bucket, sentences in sources.items()
    }
    peak_rss = round(peak_rss_mb(), 1)
    return DecodeReport(
        buckets,
        infos,
        speeds,
        peak_rss,
        # what this host allows (the targets' bounds), measured in the same process after the timings
        matmul_peak_gflops=round(matmul_peak_gflops(), 1),
        matvec_gbytes_per_s=round(matvec_gbytes_per_s(), 1),
    )


def time_export(
    folder: Path, sources: dict[str, list[str]], plan: BenchPlan, source_tokenizer
) -> tuple[ExportInfo, dict[str, DecodeSpeed]]:
    """One SavedModel: its load and first-call times, and its speed on each non-empty bucket."""
    import tensorflow_text

    started = time.perf_counter()
    loaded = tf.saved_model.load(str(folder))
    serve = loaded.signatures["serving_default"]
    loaded_s = time.perf_counter() - started
    first = next((sentences[:1] for sentences in sources.values() if sentences), [""])
    started = time.perf_counter()
    serve(text=tf.constant(first))["translation"].numpy()
    first_call_s = time.perf_counter() - started
    target = tensorflow_text.SentencepieceTokenizer(model=(folder / "assets" / "target.model").read_bytes())
    card = json.loads((folder / "model_card.json").read_text())
    info = ExportInfo(
        round(loaded_s, 2),
        round(first_call_s, 2),
        int(target.vocab_size()),
        card["config"]["model"] if "config" in card else None,  # the sizes the targets' bounds count from
    )
    shortlist = getattr(loaded, "shortlist", None)
    speeds = {}
    for bucket, sentences in sources.items():
        if sentences:
            speeds[bucket] = decode_speed(serve, sentences, plan, target)
            if shortlist:  # what its search scores, counted after the timings
                candidates = mean_candidates(shortlist, source_tokenizer, sentences)
                speeds[bucket] = dataclasses.replace(speeds[bucket], mean_candidates=candidates)
    return info, speeds


def describe_bucket(bucket: str, sentences: list[str], source_tokenizer) -> Bucket:
    low, high = BUCKETS.get(bucket, (None, None))
    lengths = source_tokenizer.tokenize(tf.constant(sentences, tf.string)).row_lengths().numpy()
    count = max(len(sentences), 1)
    return Bucket(
        (low, high),
        len(sentences),
        round(float(lengths.sum()) / count, 2),
        round(sum(len(s.split()) for s in sentences) / count, 2),
    )


def mean_candidates(table, source_tokenizer, sentences: list[str]) -> dict[str, float]:
    """Target pieces a shortlist export scores per batch, its saved table applied to `sentences`
    one by one (`"1"`) and in consecutive batches of 64 (`"64"`), as its search builds the list."""
    from app.data.pipeline import add_source_end
    from app.models.shortlist import shortlist_candidates

    # the saved LexicalTable: `frequent` [F] and `translations` [source vocab, M]
    frequent, translations = sorted(table, key=lambda variable: variable.shape.rank)
    sizes = {}
    for size in (1, 64):
        counts = []
        for start in range(0, len(sentences), size):
            ids = add_source_end(source_tokenizer.tokenize(tf.constant(sentences[start : start + size])))
            counts.append(int(tf.size(shortlist_candidates(ids.to_tensor(0), translations, frequent))))
        sizes[str(size)] = round(sum(counts) / len(counts), 1)
    return sizes


def decode_speed(serve, sentences: list[str], plan: BenchPlan, target_tokenizer) -> DecodeSpeed:
    """Sentences/s, generated target tokens/s and per-call latency at each of `BATCH_SIZES`, in steady
    state: after an untimed pass over the same batches (`warmup_s`: what tracing, and with XLA
    compiling each new padded shape, cost), as a long-running server would be."""
    rows = {}
    for size in BATCH_SIZES:
        calls = plan.latency_calls if size == 1 else math.ceil(plan.decode_sentences / size)
        calls = max(calls, plan.decode_min_calls)
        batches = [
            tf.constant([sentences[(call * size + row) % len(sentences)] for row in range(size)])
            for call in range(calls)
        ]
        started = time.perf_counter()
        for batch in batches:  # every shape these batches need is traced (and compiled) before timing
            serve(text=batch)["translation"].numpy()
        warmup_s = time.perf_counter() - started
        latencies, outputs = [], []
        for batch in batches:
            started = time.perf_counter()
            outputs += list(serve(text=batch)["translation"].numpy())
            latencies.append(1000 * (time.perf_counter() - started))
        # generated tokens: the output's pieces and its end token
        output_tokens = float(tf.reduce_sum(target_tokenizer.tokenize(outputs).row_lengths())) + len(outputs)
        seconds = sum(latencies) / 1000
        rows[str(size)] = BatchSpeed(
            calls=calls,
            sentences_per_s=round(len(outputs) / seconds, 1),
            target_tokens_per_s=round(output_tokens / seconds, 1),
            mean_output_tokens=round(output_tokens / len(outputs), 2),
            latency_ms_p50=round(_quantile(latencies, 0.5), 2),
            latency_ms_p90=round(_quantile(latencies, 0.9), 2),
            warmup_s=round(warmup_s, 3),
        )
    return DecodeSpeed(rows)


def bleu_on_test(translate, test_file: Path, limit: int | None = None) -> tuple[float, int]:
    """sacreBLEU of `translate` (a batch of source strings → their translations) on the first `limit`
    unique sources of `test_file` (all by default), in batches of 64: (BLEU, sentences scored). Attend's
    greedy export and the tutorial's are scored by this one function on the same sentences."""
    from app.scoring import corpus_bleu, read_references

    sources, references = read_references(test_file)
    sources, references = sources[:limit], references[:limit]
    hypotheses = []
    for start in range(0, len(sources), BLEU_BATCH):
        hypotheses += translate(sources[start : start + BLEU_BATCH])
    return corpus_bleu(hypotheses, references), len(sources)


def measure_translate(translate, sources: list[str], references: list[list[str]], batch_1: int) -> dict:
    """BLEU (± its 95 % margin) of `translate` (a batch of sources → their translations) on `sources`,
    its throughput in batches of 64 (after one warm-up call) and its batch-1 median latency over the
    first `batch_1` sources (batch 1 is another shape: warmed up too)."""
    from app.scoring import bleu_with_confidence

    translate(sources[:BLEU_BATCH])
    start = time.perf_counter()
    hypotheses: list[str] = []
    for first in range(0, len(sources), BLEU_BATCH):
        hypotheses += translate(sources[first : first + BLEU_BATCH])
    seconds = time.perf_counter() - start
    translate(sources[:1])
    latencies = []
    for source in sources[:batch_1]:
        begin = time.perf_counter()
        translate([source])
        latencies.append(time.perf_counter() - begin)
    bleu, margin = bleu_with_confidence(hypotheses, references)
    return {
        "sentences": len(sources),
        "bleu": bleu,
        "bleu_ci95": margin,
        "sentences_per_s_batch64": round(len(sources) / seconds, 1),
        "ms_per_sentence_batch64": round(1000 * seconds / len(sources), 2),
        "ms_batch1_p50": round(1000 * statistics.median(latencies), 2) if latencies else None,
    }


def export_translate(folder: Path):
    """A SavedModel of Attend's contract, reloaded: a function from a batch of strings to theirs."""
    loaded = tf.saved_model.load(str(folder))  # kept alive with the function: its signature needs it

    def translate(batch: list[str]) -> list[str]:
        translations = loaded.signatures["serving_default"](text=tf.constant(batch))["translation"]
        return [text.decode() for text in translations.numpy()]

    return translate


def _quantile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie (nearest rank, the lower one)."""
    ordered = sorted(values)
    return ordered[int(fraction * (len(ordered) - 1))]


def format_decode(decode: DecodeReport) -> list[str]:
    """The by-bucket decode table: a row per export × bucket × batch size."""
    lines = []
    for name, bucket in decode.buckets.items():
        low, high = bucket.source_tokens
        lines.append(
            f"{name}: {bucket.sentences} sentences of {low}–{high} source tokens "
            f"({bucket.mean_source_tokens:.1f} tokens, {bucket.mean_source_words:.1f} words on average)"
        )
    for name, info in decode.exports.items():
        lines.append(f"{name}: loaded in {info.load_s:.1f} s, first call {info.first_call_s:.2f} s")
    lines.append(
        f"{'decoding (SavedModel)':<24}{'batch':>6}{'sent/s':>9}{'tok/s':>9}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'out tok':>9}{'warm-up s':>11}"
    )
    for (export, bucket), row in decode.speeds.items():
        lines += format_speed_rows(f"{export}_{bucket}", row)
    return lines


def format_speed_rows(name: str, row: DecodeSpeed) -> list[str]:
    """One export on one bucket (`name`), a line per batch size, in the decode table's columns."""
    return [
        f"{name:<24}{size:>6}"
        f"{speed.sentences_per_s:>9.0f}{speed.target_tokens_per_s:>9.0f}"
        f"{speed.latency_ms_p50:>9.1f}{speed.latency_ms_p90:>9.1f}"
        f"{speed.mean_output_tokens:>9.1f}{speed.warmup_s:>11.2f}"
        for size, speed in row.batches.items()
    ]
