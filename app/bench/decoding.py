"""The bench's `decode` phase: what a user of the SavedModel pays per request, by source length,
batch size and search, against figures of the TensorFlow NMT tutorial measured side by side.

Sentences are bucketed by their number of source subword tokens (the export's own SentencePiece
model counts them, end marker excluded), because decoding cost follows length and the tutorial's
conversational sentences are short: the Bible's dev and test verses, and the first clause of each
(cut after , ; : . ? !), so that the short bucket is never empty.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from pathlib import Path

import tensorflow as tf

BUCKETS = {"short": (1, 10), "medium": (11, 20), "long": (21, 40)}  # source subword tokens, inclusive
BATCH_SIZES = (1, 8, 64, 256)
SENTENCES_PER_BUCKET = 256
# the bench's SavedModels of each search: plain, `--xla` and `--shortlist`
SEARCH_EXPORTS = {
    "greedy": ("greedy", "greedy_xla", "greedy_shortlist"),
    "beam4": ("beam4", "beam4_xla", "beam4_shortlist"),
}
SEED = 1234

# The TensorFlow NMT tutorial's exported model, measured in one process on this machine kind
# (2 cores) on ~2,200 short conversational Spanish sentences, and its training in steady state.
TUTORIAL = {"greedy_b64_sentences_per_s": 1892.0, "greedy_b1_p50_ms": 3.3, "train_examples_per_s": 580.0}
# Twice the tutorial: the targets of the short bucket, and of training at the bench preset's size.
TARGET_GREEDY_B64 = 3800.0
TARGET_GREEDY_B1_P50_MS = 1.7
TARGET_BEAM_OVER_GREEDY = 2.5  # beam 4's time over greedy's at batch 64, on every bucket
TARGET_TRAIN_EXAMPLES_PER_S = 1160.0


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


def run_decode_phase(export_dir: Path, exports: tuple[str, ...], sources: dict[str, list[str]], plan) -> dict:
    """Each SavedModel of `exports` (folders of `export_dir`) reloaded as a serving program would, and
    timed on each bucket of `sources` at each of `BATCH_SIZES`."""
    import tensorflow_text

    from app.bench import matmul_peak_gflops, matvec_gbytes_per_s, peak_rss_mb

    result = {"buckets": {}, "exports": {}}
    source_model = export_dir / exports[0] / "assets" / "source.model"
    source_tokenizer = tensorflow_text.SentencepieceTokenizer(model=source_model.read_bytes())
    for name in exports:
        started = time.perf_counter()
        loaded = tf.saved_model.load(str(export_dir / name))
        serve = loaded.signatures["serving_default"]
        loaded_s = time.perf_counter() - started
        first = next((sentences[:1] for sentences in sources.values() if sentences), [""])
        started = time.perf_counter()
        serve(text=tf.constant(first))["translation"].numpy()
        first_call_s = time.perf_counter() - started
        target = tensorflow_text.SentencepieceTokenizer(
            model=(export_dir / name / "assets" / "target.model").read_bytes()
        )
        result["exports"][name] = {
            "load_s": round(loaded_s, 2),
            "first_call_s": round(first_call_s, 2),
            "target_vocab": int(target.vocab_size()),
        }
        card = json.loads((export_dir / name / "model_card.json").read_text())
        if "config" in card:  # the sizes `target_bounds` counts the arithmetic from
            result["exports"][name]["model"] = card["config"]["model"]
        shortlist = getattr(loaded, "shortlist", None)
        for bucket, sentences in sources.items():
            if not sentences:
                continue
            result[f"{name}_{bucket}"] = decode_speed(serve, sentences, plan, target)
            if shortlist:
                result[f"{name}_{bucket}"]["mean_candidates"] = mean_candidates(
                    shortlist, source_tokenizer, sentences
                )
    for bucket, sentences in sources.items():
        low, high = BUCKETS.get(bucket, (None, None))
        lengths = source_tokenizer.tokenize(tf.constant(sentences, tf.string)).row_lengths().numpy()
        count = max(len(sentences), 1)
        result["buckets"][bucket] = {
            "source_tokens": [low, high],
            "sentences": len(sentences),
            "mean_source_tokens": round(float(lengths.sum()) / count, 2),
            "mean_source_words": round(sum(len(s.split()) for s in sentences) / count, 2),
        }
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    # what this host allows (`target_bounds`), measured in the same process after the timings
    result["matmul_peak_gflops"] = round(matmul_peak_gflops(), 1)
    result["matvec_gbytes_per_s"] = round(matvec_gbytes_per_s(), 1)
    return result


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


def decode_speed(serve, sentences: list[str], plan, target_tokenizer) -> dict:
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
        rows[str(size)] = {
            "calls": calls,
            "sentences_per_s": round(len(outputs) / seconds, 1),
            "target_tokens_per_s": round(output_tokens / seconds, 1),
            "mean_output_tokens": round(output_tokens / len(outputs), 2),
            "latency_ms_p50": round(_quantile(latencies, 0.5), 2),
            "latency_ms_p90": round(_quantile(latencies, 0.9), 2),
            "warmup_s": round(warmup_s, 3),
        }
    return {
        "batches": rows,
        # the figures `serve_goals` and earlier reports read
        "sentences_per_s_batch64": rows["64"]["sentences_per_s"],
        "latency_ms_batch1_p50": rows["1"]["latency_ms_p50"],
        "latency_ms_batch1_p90": rows["1"]["latency_ms_p90"],
    }


def _quantile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie (nearest rank, the lower one)."""
    ordered = sorted(values)
    return ordered[int(fraction * (len(ordered) - 1))]


def fastest(decode: dict, search: str, bucket: str, figure: str) -> tuple[str, dict] | tuple[None, None]:
    """The export of `search` (plain, XLA or shortlist) with the best `figure` on `bucket`: (its name,
    its row)."""
    names = SEARCH_EXPORTS[search]
    rows = [(name, decode[f"{name}_{bucket}"]) for name in names if f"{name}_{bucket}" in decode]
    if not rows:
        return None, None
    if figure.startswith("latency"):
        return min(rows, key=lambda item: item[1][figure])
    return max(rows, key=lambda item: item[1][figure])


def headline_figures(report: dict) -> dict:
    """The figures scripts follow from run to run, at bench.json's top level (each search: the fastest
    of its plain, XLA and shortlist exports, named beside)."""
    decode, train = report.get("decode", {}), report.get("train", {})
    b64_name, b64 = fastest(decode, "greedy", "short", "sentences_per_s_batch64")
    b1_name, b1 = fastest(decode, "greedy", "short", "latency_ms_batch1_p50")
    _, beam = fastest(decode, "beam4", "short", "sentences_per_s_batch64")
    bahdanau = [row["train_examples_per_s"] for key, row in train.items() if key.startswith("bahdanau/")]
    return {
        "decode_short_greedy_b64_sent_per_s": b64 and b64["sentences_per_s_batch64"],
        "decode_short_greedy_b64_export": b64_name,
        "decode_short_greedy_b1_p50_ms": b1 and b1["latency_ms_batch1_p50"],
        "decode_short_greedy_b1_export": b1_name,
        "decode_short_beam4_over_greedy_b64": b64
        and beam
        and round(b64["sentences_per_s_batch64"] / beam["sentences_per_s_batch64"], 3),
        "train_bahdanau_best_examples_per_s": max(bahdanau) if bahdanau else None,
    }


def targets(report: dict) -> list[dict]:
    """Each target: its figure, the goal, met or not, the tutorial's figure it is twice, and what
    this host allows for it (`target_bounds`) where the report holds what that needs."""
    headline, decode = headline_figures(report), report.get("decode", {})
    bounds = target_bounds(report)
    rows = []

    def add(name, value, goal, at_least, tutorial=None, bound=None):
        if value is None:
            return
        met = value >= goal if at_least else value <= goal
        row = {"target": name, "value": value, "goal": goal, "at_least": at_least, "met": met}
        if tutorial:
            row |= {"tutorial": tutorial, "ratio_to_tutorial": round(value / tutorial, 3)}
        if bound:
            reachable = bound["value"] >= goal if at_least else bound["value"] <= goal
            # how close the figure comes to the bound: 1.0 would be the arithmetic at the host's rate
            share = value / bound["value"] if at_least else bound["value"] / value
            row["bound"] = {**bound, "reachable": reachable, "share": round(share, 3)}
        rows.append(row)

    add(
        f"greedy ({headline['decode_short_greedy_b64_export']}), short, batch 64: sentences/s",
        headline["decode_short_greedy_b64_sent_per_s"],
        TARGET_GREEDY_B64,
        True,
        TUTORIAL["greedy_b64_sentences_per_s"],
        bounds.get("greedy_b64"),
    )
    add(
        f"greedy ({headline['decode_short_greedy_b1_export']}), short, batch 1: p50 ms",
        headline["decode_short_greedy_b1_p50_ms"],
        TARGET_GREEDY_B1_P50_MS,
        False,
        TUTORIAL["greedy_b1_p50_ms"],
        bounds.get("greedy_b1"),
    )
    for bucket in BUCKETS:
        _, greedy = fastest(decode, "greedy", bucket, "sentences_per_s_batch64")
        _, beam = fastest(decode, "beam4", bucket, "sentences_per_s_batch64")
        if greedy and beam:
            ratio = round(greedy["sentences_per_s_batch64"] / beam["sentences_per_s_batch64"], 3)
            add(f"beam 4 over greedy, {bucket}, batch 64: time", ratio, TARGET_BEAM_OVER_GREEDY, False)
    add(
        "bahdanau training, best precision: examples/s",
        headline["train_bahdanau_best_examples_per_s"],
        TARGET_TRAIN_EXAMPLES_PER_S,
        True,
        TUTORIAL["train_examples_per_s"],
        bounds.get("train"),
    )
    return rows


def target_bounds(report: dict) -> dict[str, dict]:
    """What this host allows each speed target, from the model's arithmetic counted from its layer
    sizes (`app.models.cost`) and the host's float32 rates measured in the same processes:

    - `greedy_b64`: the sentences/s ceiling: the matmul peak over the FLOPs of a short sentence
      (its mean source and output lengths; a shortlist export's mean candidates at batch 64);
    - `greedy_b1`: the latency floor in ms: the weights a batch-1 decoding reads at least, at the
      rate a batch-1 product streams them;
    - `train`: the examples/s ceiling of the best bahdanau training row: its peak over its FLOPs.

    No schedule of the same arithmetic beats them; per-op overhead and small matmuls keep real
    figures well inside. Keys are left out where the report lacks a figure they need."""
    from app.models.cost import decode_gflop_per_sentence, decode_weight_megabytes

    headline, decode, bounds = headline_figures(report), report.get("decode", {}), {}
    short = decode.get("buckets", {}).get("short")
    peak, bandwidth = decode.get("matmul_peak_gflops"), decode.get("matvec_gbytes_per_s")

    def decoding(export: str | None, size: str) -> dict | None:
        """The cost functions' arguments for `export`'s short sentences at batch `size`, or None."""
        info, row = decode.get("exports", {}).get(export or ""), decode.get(f"{export}_short")
        if not (short and info and "model" in info and row):
            return None
        return {
            "model": info["model"],
            "target_vocab": info["target_vocab"],
            # the encoder also reads the end marker the bucket's lengths leave out
            "source_tokens": short["mean_source_tokens"] + 1,
            "output_tokens": row["batches"][size]["mean_output_tokens"],
            "scored_vocab": row.get("mean_candidates", {}).get(size),
        }

    greedy_b64 = decoding(headline["decode_short_greedy_b64_export"], "64")
    if greedy_b64 and peak:
        gflop = decode_gflop_per_sentence(**greedy_b64)
        bounds["greedy_b64"] = {
            "value": round(peak / gflop, 1),
            "basis": f"{1000 * gflop:.1f} MFLOP a sentence at the {peak:,.0f} GFLOP/s matmul peak",
        }
    greedy_b1 = decoding(headline["decode_short_greedy_b1_export"], "1")
    if greedy_b1 and bandwidth:
        megabytes = decode_weight_megabytes(**greedy_b1)
        bounds["greedy_b1"] = {
            "value": round(megabytes / bandwidth, 3),  # MB / (GB/s) = ms
            "basis": f"{megabytes:.0f} MB of weights read at {bandwidth:,.0f} GB/s",
        }
    bahdanau = [row for key, row in report.get("train", {}).items() if key.startswith("bahdanau/")]
    if bahdanau:
        best = max(bahdanau, key=lambda row: row["train_examples_per_s"])
        if "model_gflop_per_example" in best and "matmul_peak_gflops" in best:
            bounds["train"] = {
                "value": round(best["matmul_peak_gflops"] / best["model_gflop_per_example"], 1),
                "basis": (
                    f"{1000 * best['model_gflop_per_example']:.0f} MFLOP a pair at the "
                    f"{best['matmul_peak_gflops']:,.0f} GFLOP/s matmul peak"
                ),
            }
    return bounds


def format_decode(decode: dict) -> list[str]:
    """The by-bucket decode table: a row per export × bucket × batch size."""
    lines = []
    for bucket, info in decode.get("buckets", {}).items():
        low, high = info["source_tokens"]
        lines.append(
            f"{bucket}: {info['sentences']} sentences of {low}–{high} source tokens "
            f"({info['mean_source_tokens']:.1f} tokens, {info['mean_source_words']:.1f} words on average)"
        )
    for name, info in decode.get("exports", {}).items():
        lines.append(f"{name}: loaded in {info['load_s']:.1f} s, first call {info['first_call_s']:.2f} s")
    lines.append(
        f"{'decoding (SavedModel)':<24}{'batch':>6}{'sent/s':>9}{'tok/s':>9}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'out tok':>9}{'warm-up s':>11}"
    )
    for key, row in decode.items():
        if not (isinstance(row, dict) and "batches" in row):
            continue
        for size, speed in row["batches"].items():
            lines.append(
                f"{key:<24}{size:>6}{speed['sentences_per_s']:>9.0f}{speed['target_tokens_per_s']:>9.0f}"
                f"{speed['latency_ms_p50']:>9.1f}{speed['latency_ms_p90']:>9.1f}"
                f"{speed['mean_output_tokens']:>9.1f}{speed['warmup_s']:>11.2f}"
            )
    return lines


def format_targets(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        sign = "≥" if row["at_least"] else "≤"
        tutorial = (
            f" = {row['ratio_to_tutorial']:.2f} × the tutorial's {row['tutorial']:,g}"
            if "tutorial" in row
            else ""
        )
        verdict = "met" if row["met"] else "missed"
        bound = row.get("bound")
        if bound:
            kind = "ceiling" if row["at_least"] else "floor"
            reach = "not ruled out by the arithmetic" if bound["reachable"] else "out of reach on this host"
            verdict += (
                f"; this host's {kind} {bound['value']:,.4g} ({bound['basis']}; the figure is "
                f"{bound['share']:.0%} of it): {reach}"
            )
        lines.append(
            f"target {row['target']}: {row['value']:,.4g}{tutorial} (goal {sign} {row['goal']:,g}): {verdict}"
        )
    return lines
