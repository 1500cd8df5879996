"""`attend bench`: what training and serving cost on this machine, measured, seeded, in `bench.json`.

Each measurement runs in its own process (`python -m app.bench PHASE …`) so that its peak RSS
is its own and no precision policy or compiled function leaks between them:

- `train`: one (attention style, precision) pair: time to the first step, steady-state examples/s
  and target tokens/s (median over windows), achieved model FLOP/s against a float32 matmul
  peak measured in the same process, dev loss after the same number of steps, peak RSS.
- `serving-model`: a model of the same size trained for `BenchPlan.serving_steps` and exported
  (greedy and beam K=4): decoding costs what the outputs' lengths cost, and after the few timed
  steps a model emits only a word or two per sentence.
- `decode`: those SavedModels reloaded with `tf.saved_model.load`, as a serving program would:
  sentences/s at batch 64 and p50/p90 latency at batch 1, for short and long sources.
- `serve`: the greedy SavedModel served by `attend serve` (a subprocess on loopback, whose peak
  RSS is its own), with dynamic batching and without, under 1, 8 and 64 concurrent clients each
  sending one of the decode phase's short sentences per REST request: requests/s, p50/p90/p99
  latency, mean merged batch, errors; against the offline batch-64 throughput of the same export.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from app.models.cost import model_gflop_per_example, step_breakdown
from app.processes import run_python_for_json

BENCH_STYLES = ("bahdanau", "additive_after", "luong")
BENCH_PRECISIONS = ("float32", "mixed_bfloat16")
# The bench trains on short pairs; at small vocabularies (more pieces per sentence) the preset's token
# limit is raised in steps of `train.bucket_width` until at least this many pairs remain.
MIN_TRAIN_PAIRS = 256  # four batches of 64 distinct pairs
MIN_DEV_PAIRS = 32
SERVING_EXPORTS = (("greedy", 1), ("beam4", 4))  # (SavedModel folder, beam width) that decoding is timed on
QUICK_OVERRIDES = [
    "model.embedding_dim=32",
    "model.units=32",
    "model.attention_units=32",
    "model.readout_units=32",
    "tokenizer.source_vocab_size=500",
    "tokenizer.target_vocab_size=500",
]


@dataclasses.dataclass(frozen=True)
class BenchPlan:
    """How long each measurement runs (`--quick`: tiny model, few steps: checks shape, not speed)."""

    warmup_steps: int = 30
    windows: int = 5
    window_steps: int = 20
    dev_batches: int = 10
    latency_calls: int = 30
    throughput_batches: int = 5
    serving_steps: int = 800  # training steps of the model decoding is timed on


QUICK_PLAN = BenchPlan(
    warmup_steps=3,
    windows=2,
    window_steps=3,
    dev_batches=2,
    latency_calls=3,
    throughput_batches=1,
    serving_steps=5,
)


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Float32 matmul GFLOP/s of this process on this machine (the best of several timed runs)."""
    left = tf.random.stateless_normal([size, size], seed=(1, 2))
    right = tf.random.stateless_normal([size, size], seed=(3, 4))
    multiply = tf.function(lambda x, y: tf.matmul(x, y))
    multiply(left, right).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        multiply(left, right).numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class StepTimer(keras.callbacks.Callback):
    """Records when fit started and when each training step ended."""

    def on_train_begin(self, logs=None):
        self.started, self.ends = time.perf_counter(), []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def run_train_phase(config, data_dir: Path, plan: BenchPlan) -> dict:
    """Trains for warm-up + timed windows on short sentence pairs and reports throughput and FLOP/s."""
    from app.data.prepare import prepare_data
    from app.recipe import compile_model, make_datasets

    keras.utils.set_random_seed(config.train.seed)
    data = prepare_data(config, data_dir, log=lambda *_: None)
    train_set, dev_set = make_datasets(config, data)
    dev_set = dev_set.take(plan.dev_batches)
    source_tokens, target_tokens = mean_tokens(train_set.take(50))
    steps = plan.warmup_steps + plan.windows * plan.window_steps
    peak = matmul_peak_gflops()
    model = compile_model(config, data, steps)
    timer = StepTimer()
    model.fit(train_set.repeat(), epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    examples_per_s = steady_state_rate(timer.ends, plan, config.train.batch_size)
    gflop = model_gflop_per_example(
        dataclasses.asdict(config.model),
        data.source_tokenizer.vocab_size,
        data.target_tokenizer.vocab_size,
        source_tokens,
        target_tokens,
    )
    result = {
        "time_to_first_step_s": round(timer.ends[0] - timer.started, 2),
        "train_examples_per_s": round(examples_per_s, 1),
        "train_target_tokens_per_s": round(examples_per_s * target_tokens, 1),
        "mean_source_tokens": round(source_tokens, 2),
        "mean_target_tokens": round(target_tokens, 2),
        "model_gflop_per_example": round(gflop, 4),
        "achieved_gflops": round(examples_per_s * gflop, 2),
        "matmul_peak_gflops": round(peak, 1),
        "utilization": round(examples_per_s * gflop / peak, 4),
        "steps": steps,
        "dev_loss_after_steps": round(float(model.evaluate(dev_set, verbose=0)[0]), 4),
        "parameters": int(model.count_params()),
        "step_breakdown_ms": step_breakdown(
            dataclasses.asdict(config.model),
            data.target_tokenizer.vocab_size,
            config.train.batch_size,
            round(target_tokens) + 1,
            plan.window_steps,
        ),
    }
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def run_serving_model_phase(config, data_dir: Path, plan: BenchPlan, export_dir: Path) -> dict:
    """Trains and exports the model decoding is timed on: after the few timed steps a model emits
    one or two words per sentence, which would flatter decoding; this one emits sentence-length
    translations. (Its own process: a second model trained beside the timed one lost the
    SentencePiece resource of the tokenizers they share.)"""
    from app.data.prepare import prepare_data
    from app.recipe import compile_model, make_datasets

    keras.utils.set_random_seed(config.train.seed)
    data = prepare_data(config, data_dir, log=lambda *_: None)
    train_set, dev_set = make_datasets(config, data)
    model = compile_model(config, data, plan.serving_steps)
    model.fit(train_set.repeat(), epochs=1, steps_per_epoch=plan.serving_steps, verbose=0)
    export_for_serving(model, config, data, export_dir)
    dev_loss = float(model.evaluate(dev_set.take(plan.dev_batches), verbose=0)[0])
    return {"steps": plan.serving_steps, "dev_loss": round(dev_loss, 4)}


def mean_tokens(batches) -> tuple[float, float]:
    """Mean real (non-padding) source and target-output tokens per pair over some batches."""
    source_total = target_total = pairs = 0
    for (source, _), target_out in batches:
        source_total += int((source != 0).numpy().sum())
        target_total += int((target_out != 0).numpy().sum())
        pairs += int(source.shape[0])
    return source_total / max(pairs, 1), target_total / max(pairs, 1)


def steady_state_rate(step_ends: list[float], plan: BenchPlan, batch_size: int) -> float:
    """Median examples/s over the timed windows that follow the warm-up steps."""
    rates = []
    for window in range(plan.windows):
        first = plan.warmup_steps + window * plan.window_steps - 1
        elapsed = step_ends[first + plan.window_steps] - step_ends[first]
        rates.append(plan.window_steps * batch_size / elapsed)
    return statistics.median(rates)


def export_for_serving(model, config, data, export_dir: Path) -> None:
    """Two SavedModels of the same weights: greedy and beam (K=4) `serving_default`."""
    from app.translator import build_translator, float32_model, save_translator

    model = float32_model(model, config)
    for name, width in SERVING_EXPORTS:
        translator = build_translator(model, config, data.vocab_dir, data.tokenizers, beam_width=width)
        save_translator(translator, export_dir / name, {"bench": True}, ["Hola."], log=lambda *_: None)


def run_decode_phase(export_dir: Path, short: list[str], long: list[str], plan: BenchPlan) -> dict:
    """Decoding speed of the reloaded SavedModels."""
    import tensorflow_text  # noqa: F401  (the SentencePiece ops)

    result = {}
    for name, _ in SERVING_EXPORTS:
        serve = tf.saved_model.load(str(export_dir / name)).signatures["serving_default"]
        for label, sentences in (("short", short), ("long", long)):
            result[f"{name}_{label}"] = decode_speed(serve, sentences, plan)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def decode_speed(serve, sentences: list[str], plan: BenchPlan) -> dict:
    batch = tf.constant((sentences * 64)[:64])
    serve(text=batch)  # trace and warm up
    started = time.perf_counter()
    for _ in range(plan.throughput_batches):
        translations = serve(text=batch)["translation"].numpy()
    per_batch = (time.perf_counter() - started) / plan.throughput_batches
    latencies = []
    for index in range(plan.latency_calls):
        one = tf.constant([sentences[index % len(sentences)]])
        started = time.perf_counter()
        serve(text=one)["translation"].numpy()
        latencies.append(1000 * (time.perf_counter() - started))
    latencies.sort()
    return {
        "sentences_per_s_batch64": round(64 / per_batch, 1),
        "latency_ms_batch1_p50": round(latencies[len(latencies) // 2], 2),
        "latency_ms_batch1_p90": round(latencies[int(0.9 * (len(latencies) - 1))], 2),
        "mean_source_words": round(sum(len(s.split()) for s in sentences) / len(sentences), 1),
        "mean_output_words": round(sum(len(t.split()) for t in translations) / len(translations), 1),
    }


def pick_sources(config, data_dir: Path) -> tuple[list[str], list[str]]:
    """Short (≤ 10 words) and long (≥ 30 words) source sentences from the dev and test splits; a corpus
    without such sentences gives its shortest and longest 64 (the report shows their mean length)."""
    from app.data.tokenizer import read_side

    directory = data_dir / config.corpus_name
    sentences = sorted({s for split in ("dev", "test") for s in read_side(directory / f"{split}.tsv", 0)})
    by_length = sorted(sentences, key=lambda sentence: len(sentence.split()))
    short = [s for s in sentences if len(s.split()) <= 10][:64] or by_length[:64]
    long = [s for s in sentences if len(s.split()) >= 30][:64] or by_length[-64:]
    return short, long


def choose_token_limits(config, data) -> dict:
    """The preset's `max_source_tokens`/`max_target_tokens`, raised together until the length filter
    keeps MIN_TRAIN_PAIRS train and MIN_DEV_PAIRS dev pairs (or nothing longer is left)."""
    from app.data.prepare import token_lengths

    lengths = {
        split: list(zip(*token_lengths(path, data.vocab_dir), strict=True))
        for split, path in (("train", data.corpus.train), ("dev", data.corpus.dev))
    }
    longest = max(max(pair) for pairs in lengths.values() for pair in pairs)
    source_limit, target_limit = config.train.max_source_tokens, config.train.max_target_tokens

    def kept(split: str) -> int:
        return sum(s <= source_limit and t <= target_limit for s, t in lengths[split])

    while (kept("train") < MIN_TRAIN_PAIRS or kept("dev") < MIN_DEV_PAIRS) and min(
        source_limit, target_limit
    ) < longest:
        source_limit += config.train.bucket_width
        target_limit += config.train.bucket_width
    if kept("train") < config.train.batch_size or kept("dev") == 0:
        raise ValueError(
            f"The bench needs one batch of train pairs ({config.train.batch_size}) and one dev pair; even "
            f"with every pair of up to {longest} tokens the corpus gives {kept('train'):,} train and "
            f"{kept('dev'):,} dev pairs. Use a larger corpus (data.max_pairs, data.dev_size) or a smaller "
            "train.batch_size."
        )
    return {
        "max_source_tokens": source_limit,
        "max_target_tokens": target_limit,
        "train_pairs": kept("train"),
        "dev_pairs": kept("dev"),
        "train_pairs_before_filter": len(lengths["train"]),
        "dev_pairs_before_filter": len(lengths["dev"]),
    }


def _phase(arguments: list[str]) -> dict:
    """Runs one phase in a fresh interpreter and returns its JSON."""
    return run_python_for_json(["-m", "app.bench", *arguments], f"bench phase {arguments[:3]}")


def training_variants(quick: bool) -> list[tuple[str, list[str]]]:
    """Every benched attention style in both precisions, and XLA on the faithful one; `--quick`
    checks the machinery only: every style in float32, bfloat16 on the faithful one."""
    variants = [
        (f"{style}/{precision}", [f"model.attention_style={style}", f"train.precision={precision}"])
        for style in BENCH_STYLES
        for precision in BENCH_PRECISIONS
        if not quick or precision == "float32" or style == BENCH_STYLES[0]
    ]
    if not quick:
        variants.append(
            ("bahdanau/float32/xla", ["model.attention_style=bahdanau", "train.jit_compile=true"])
        )
    return variants


def export_run_for_serving(run_dir: Path, export_dir: Path) -> dict:
    """Greedy and beam (K=4) SavedModels of a trained run, for decoding speed on real outputs."""
    from app.run import RunDir
    from app.translator import load_translator, save_translator

    for name, width in SERVING_EXPORTS:
        translator = load_translator(RunDir(run_dir), beam_width=width)
        save_translator(translator, export_dir / name, {"bench": True}, ["Hola."], log=lambda *_: None)
    return {
        "run": str(run_dir),
        "parameters": int(translator.model.count_params()),
        "source_vocab": translator.source_tokenizer.vocab_size,
        "target_vocab": translator.target_tokenizer.vocab_size,
    }


def run_bench(
    preset: str,
    overrides: list[str],
    quick: bool,
    output: Path,
    data_dir: Path,
    log=print,
    serve_run: Path | None = None,
) -> dict:
    """All phases, each in its own process; prints a table and writes `output` (JSON).

    Decoding is timed on `serve_run`'s trained model when given, else on a bench-preset model
    trained for `BenchPlan.serving_steps`."""
    from app.config import load_config
    from app.data.prepare import prepare_data
    from app.run import RunDir

    overrides = [*(QUICK_OVERRIDES if quick else []), *overrides]
    config = load_config(preset, overrides)
    data = prepare_data(config, data_dir, log=log)  # once, before the timed processes
    pairs = choose_token_limits(config, data)
    overrides += [f"train.{key}={pairs[key]}" for key in ("max_source_tokens", "max_target_tokens")]
    config = load_config(preset, overrides)
    log(
        f"bench: pairs of at most {pairs['max_source_tokens']} source / {pairs['max_target_tokens']} target "
        f"tokens: {pairs['train_pairs']:,} of {pairs['train_pairs_before_filter']:,} train, "
        f"{pairs['dev_pairs']:,} of {pairs['dev_pairs_before_filter']:,} dev"
    )
    common = ["--preset", preset, "--data-dir", str(data_dir), *(["--quick"] if quick else [])]
    report = {
        "machine": machine_description(),
        "preset": preset,
        "overrides": overrides,
        "quick": quick,
        "pairs": pairs,
        "train": {},
        "config": config.to_dict(),
    }
    plan = QUICK_PLAN if quick else BenchPlan()
    with tempfile.TemporaryDirectory() as scratch:
        for key, settings in training_variants(quick):
            log(f"bench: training {key} …")
            sets = [f"--set={override}" for override in (*overrides, *settings)]
            report["train"][key] = _phase(["train", *common, *sets])
        if serve_run is not None:
            report["serve_model"] = export_run_for_serving(serve_run, Path(scratch))
            short, long = pick_sources(RunDir(serve_run).config(), data_dir)
        else:
            log(f"bench: training the decoding model ({plan.serving_steps} steps) …")
            note = f"the bench model after {plan.serving_steps} training steps"
            sets = [f"--set={override}" for override in overrides]
            serving = _phase(["serving-model", *common, "--export-dir", scratch, *sets])
            report["serve_model"] = {"run": None, "note": note, **serving}
            short, long = pick_sources(config, data_dir)
        log("bench: decoding with the reloaded SavedModel …")
        report["serve"] = _phase(
            [
                "serve",
                "--export-dir",
                scratch,
                "--sources",
                json.dumps([short, long]),
                *(["--quick"] if quick else []),
            ]
        )
    output.write_text(json.dumps(report, indent=2) + "\n")
    log(format_table(report))
    log(f"Wrote {output}")
    return report


def machine_description() -> dict:
    import platform

    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
    }


def format_table(report: dict) -> str:
    pairs = report["pairs"]
    lines = [
        f"training pairs: {pairs['train_pairs']:,} (dev {pairs['dev_pairs']:,}) of at most "
        f"{pairs['max_source_tokens']} source / {pairs['max_target_tokens']} target tokens",
        f"{'training':<24}{'ex/s':>8}{'tok/s':>10}{'1st step s':>13}{'GFLOP/s':>9}{'util':>6}"
        f"{'dev loss':>10}{'RSS MB':>8}",
    ]
    for key, row in report["train"].items():
        lines.append(
            f"{key:<24}{row['train_examples_per_s']:>8.0f}{row['train_target_tokens_per_s']:>10.0f}"
            f"{row['time_to_first_step_s']:>13.1f}{row['achieved_gflops']:>9.1f}"
            f"{row['utilization']:>6.0%}{row['dev_loss_after_steps']:>10.3f}{row['peak_rss_mb']:>8.0f}"
        )
    lines.append(
        "forward+backward ms, parts timed alone: full = encoder + decoder recurrence + readout/loss + rest"
    )
    for key, row in report["train"].items():
        parts = row["step_breakdown_ms"]
        lines.append(
            f"{key:<24}full {parts['full']:.1f} = {parts['encoder']:.1f} + "
            f"{parts['decoder_recurrence']:.1f} + {parts['readout_and_loss']:.1f} + rest"
        )
    serve_model = report.get("serve_model", {})
    lines.append(f"decoding is timed on {serve_model.get('run') or serve_model.get('note')}")
    lines.append(
        f"{'decoding (SavedModel)':<24}{'sent/s @64':>10}{'p50 ms @1':>12}{'p90 ms @1':>12}"
        f"{'output words':>14}"
    )
    for key, row in report["serve"].items():
        if isinstance(row, dict):
            lines.append(
                f"{key:<24}{row['sentences_per_s_batch64']:>10.0f}{row['latency_ms_batch1_p50']:>12.1f}"
                f"{row['latency_ms_batch1_p90']:>12.1f}{row['mean_output_words']:>14.1f}"
            )
    lines.append(
        f"serving peak RSS {report['serve']['peak_rss_mb']:.0f} MB; matmul peak "
        f"{next(iter(report['train'].values()))['matmul_peak_gflops']:.0f} GFLOP/s (float32)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The phases run in their own processes: `python -m app.bench train|serving-model|serve …`."""
    parser = argparse.ArgumentParser(prog="python -m app.bench")
    parser.add_argument("phase", choices=("train", "serving-model", "serve"))
    parser.add_argument("--preset", default="bench")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--export-dir", type=Path, default=None)
    parser.add_argument("--sources", default="[[], []]")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="section.key=value")
    args = parser.parse_args(argv)
    plan = QUICK_PLAN if args.quick else BenchPlan()
    if args.phase == "serve":
        short, long = json.loads(args.sources)
        result = run_serve_phase(args.export_dir, short, long, plan)
    else:
        from app.config import load_config

        config = load_config(args.preset, args.overrides)
        if args.phase == "serving-model":
            result = run_serving_model_phase(config, args.data_dir, plan, args.export_dir)
        else:
            result = run_train_phase(config, args.data_dir, plan)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
