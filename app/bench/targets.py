"""The bench's targets: multiples of the TensorFlow NMT tutorial's figures measured in the same run
(`app.bench.tutorial`), each speed target with what this host allows it (`target_bounds`), and the
headline figures they are read from."""

from __future__ import annotations

from app.bench.decoding import BUCKETS
from app.bench.report import (
    Bound,
    DecodeReport,
    DecodeSpeed,
    Headline,
    ServingModel,
    Target,
    TrainRow,
    TutorialReport,
)

# the bench's SavedModels of each search: plain, `--xla` and `--shortlist`
SEARCH_EXPORTS = {
    "greedy": ("greedy", "greedy_xla", "greedy_shortlist"),
    "beam4": ("beam4", "beam4_xla", "beam4_shortlist"),
}
# The goals of issue #31 against the tutorial measured in the same run: twice its greedy sentences/s
# at batch 64 on the short bucket and its training examples/s, half its batch-1 p50 latency, and
# 1.5 times its BLEU on the same test sentences.
SPEEDUP_GOAL = 2.0
BLEU_GOAL = 1.5
TARGET_BEAM_OVER_GREEDY = 2.5  # beam 4's time over greedy's at batch 64, on every bucket


def fastest(
    decode: DecodeReport, search: str, bucket: str, figure: str
) -> tuple[str | None, DecodeSpeed | None]:
    """The export of `search` (plain, XLA or shortlist) with the best `figure` (a `DecodeSpeed`
    property) on `bucket`: (its name, its row), or (None, None) where none was timed."""
    rows = [
        (name, decode.speeds[name, bucket])
        for name in SEARCH_EXPORTS[search]
        if (name, bucket) in decode.speeds
    ]
    if not rows:
        return None, None
    best = min if figure.startswith("latency") else max
    return best(rows, key=lambda item: getattr(item[1], figure))


def _bahdanau_rows(train: dict[str, TrainRow]) -> list[TrainRow]:
    return [row for key, row in train.items() if key.startswith("bahdanau/")]


def headline_figures(train: dict[str, TrainRow], decode: DecodeReport) -> Headline:
    b64_name, b64 = fastest(decode, "greedy", "short", "sentences_per_s_batch64")
    b1_name, b1 = fastest(decode, "greedy", "short", "latency_ms_batch1_p50")
    _, beam = fastest(decode, "beam4", "short", "sentences_per_s_batch64")
    bahdanau = [row.train_examples_per_s for row in _bahdanau_rows(train)]
    return Headline(
        decode_short_greedy_b64_sent_per_s=b64 and b64.sentences_per_s_batch64,
        decode_short_greedy_b64_export=b64_name,
        decode_short_greedy_b1_p50_ms=b1 and b1.latency_ms_batch1_p50,
        decode_short_greedy_b1_export=b1_name,
        decode_short_beam4_over_greedy_b64=(
            round(b64.sentences_per_s_batch64 / beam.sentences_per_s_batch64, 3) if b64 and beam else None
        ),
        train_bahdanau_best_examples_per_s=max(bahdanau) if bahdanau else None,
    )


def targets(
    train: dict[str, TrainRow],
    decode: DecodeReport,
    tutorial: TutorialReport | None = None,
    serve_model: ServingModel | None = None,
) -> list[Target]:
    """Each target the report has the figures of: against `tutorial` (measured in the same run), the
    short bucket's greedy rate and latency, the best bahdanau training row, and the BLEU of the
    decoding model's greedy export (`serve_model`); and beam 4 over greedy on every bucket."""
    headline, bounds = headline_figures(train, decode), target_bounds(train, decode)
    candidates = []
    if tutorial is not None:
        candidates += [
            Target(
                f"greedy ({headline.decode_short_greedy_b64_export}), short, batch 64: sentences/s",
                headline.decode_short_greedy_b64_sent_per_s,
                round(SPEEDUP_GOAL * tutorial.greedy_b64_sentences_per_s, 1),
                at_least=True,
                tutorial=tutorial.greedy_b64_sentences_per_s,
                bound=bounds.get("greedy_b64"),
            ),
            Target(
                f"greedy ({headline.decode_short_greedy_b1_export}), short, batch 1: p50 ms",
                headline.decode_short_greedy_b1_p50_ms,
                round(tutorial.greedy_b1_p50_ms / SPEEDUP_GOAL, 3),
                at_least=False,
                tutorial=tutorial.greedy_b1_p50_ms,
                bound=bounds.get("greedy_b1"),
            ),
        ]
    for bucket in BUCKETS:
        _, greedy = fastest(decode, "greedy", bucket, "sentences_per_s_batch64")
        _, beam = fastest(decode, "beam4", bucket, "sentences_per_s_batch64")
        if greedy and beam:
            ratio = round(greedy.sentences_per_s_batch64 / beam.sentences_per_s_batch64, 3)
            name = f"beam 4 over greedy, {bucket}, batch 64: time"
            candidates.append(Target(name, ratio, TARGET_BEAM_OVER_GREEDY, at_least=False))
    if tutorial is not None:
        candidates.append(
            Target(
                "bahdanau training, best precision: examples/s",
                headline.train_bahdanau_best_examples_per_s,
                round(SPEEDUP_GOAL * tutorial.train_examples_per_s, 1),
                at_least=True,
                tutorial=tutorial.train_examples_per_s,
                bound=bounds.get("train"),
            )
        )
    if tutorial is not None and serve_model is not None and serve_model.bleu is not None:
        candidates.append(
            Target(
                f"BLEU of the greedy export, {serve_model.bleu_sentences} test sentences",
                serve_model.bleu,
                round(BLEU_GOAL * tutorial.bleu, 2),
                at_least=True,
                tutorial=tutorial.bleu,
            )
        )
    return [target for target in candidates if target.value is not None]


def target_bounds(train: dict[str, TrainRow], decode: DecodeReport) -> dict[str, Bound]:
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

    headline, bounds = headline_figures(train, decode), {}
    peak, bandwidth = decode.matmul_peak_gflops, decode.matvec_gbytes_per_s
    greedy_b64 = _short_decoding(decode, headline.decode_short_greedy_b64_export, "64")
    if greedy_b64 and peak:
        gflop = decode_gflop_per_sentence(**greedy_b64)
        basis = f"{1000 * gflop:.1f} MFLOP a sentence at the {peak:,.0f} GFLOP/s matmul peak"
        bounds["greedy_b64"] = Bound(round(peak / gflop, 1), basis)
    greedy_b1 = _short_decoding(decode, headline.decode_short_greedy_b1_export, "1")
    if greedy_b1 and bandwidth:
        megabytes = decode_weight_megabytes(**greedy_b1)
        basis = f"{megabytes:.0f} MB of weights read at {bandwidth:,.0f} GB/s"
        bounds["greedy_b1"] = Bound(round(megabytes / bandwidth, 3), basis)  # MB / (GB/s) = ms
    bahdanau = _bahdanau_rows(train)
    if bahdanau:
        best = max(bahdanau, key=lambda row: row.train_examples_per_s)
        basis = (
            f"{1000 * best.model_gflop_per_example:.0f} MFLOP a pair at the "
            f"{best.matmul_peak_gflops:,.0f} GFLOP/s matmul peak"
        )
        bounds["train"] = Bound(round(best.matmul_peak_gflops / best.model_gflop_per_example, 1), basis)
    return bounds


def _short_decoding(decode: DecodeReport, export: str | None, size: str) -> dict | None:
    """The cost functions' arguments for `export`'s short sentences at batch `size`, or None."""
    short, info = decode.buckets.get("short"), decode.exports.get(export or "")
    row = decode.speed(export, "short")
    if not (short and info and info.model and row):
        return None
    return {
        "model": info.model,
        "target_vocab": info.target_vocab,
        # the encoder also reads the end marker the bucket's lengths leave out
        "source_tokens": short.mean_source_tokens + 1,
        "output_tokens": row.batches[size].mean_output_tokens,
        "scored_vocab": (row.mean_candidates or {}).get(size),
    }


def format_targets(targets: list[Target]) -> list[str]:
    return [_target_line(target) for target in targets]


def _target_line(target: Target) -> str:
    sign = "≥" if target.at_least else "≤"
    tutorial = ""
    if target.tutorial is not None:  # a tiny model's BLEU of 0 has no ratio
        ratio = target.ratio_to_tutorial
        tutorial = f" = {ratio:.2f} ×" if ratio is not None else " against"
        tutorial += f" the tutorial's {target.tutorial:,g}"
    verdict = "met" if target.met else "missed"
    if target.bound:
        kind = "ceiling" if target.at_least else "floor"
        reach = "not ruled out by the arithmetic" if target.reachable else "out of reach on this host"
        verdict += (
            f"; this host's {kind} {target.bound.value:,.4g} ({target.bound.basis}; the figure is "
            f"{target.share:.0%} of it): {reach}"
        )
    return f"target {target.target}: {target.value:,.4g}{tutorial} (goal {sign} {target.goal:,g}): {verdict}"
