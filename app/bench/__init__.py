"""`attend bench`: what training and serving cost on this machine, measured, seeded, in `bench.json`.

Each measurement runs in its own process (`python -m app.bench PHASE …`) so that its peak RSS
is its own and no precision policy or compiled function leaks between them:

- `train`: one (attention style, precision) pair: time to the first step, steady-state examples/s
  and target tokens/s (median over windows), achieved model FLOP/s against a float32 matmul
  peak measured in the same process, dev loss after the same number of steps, peak RSS.
- `serving-model`: a model of the same size trained for `BenchPlan.serving_steps` and exported
  (`SERVING_EXPORTS`: greedy and beam K=4, each plain, with `--xla` and with `--shortlist`):
  decoding costs what the outputs' lengths cost, and after the few timed steps a model emits only a
  word or two per sentence.
- `decode` (`app.bench.decoding`): those SavedModels reloaded with `tf.saved_model.load`, as a
  serving program would, on sources bucketed by subword length (1–10, 11–20, 21–40) at batch 1,
  8, 64 and 256: sentences/s, target tokens/s, p50/p90 latency, first-call time, a shortlist
  export's candidates per batch; the targets against the TensorFlow tutorial's figures, each with
  what this host allows it (the model's arithmetic at the matmul peak and batch-1 weight-streaming
  rate measured in that process), and the headline figures at bench.json's top level.
- `serve`: the greedy SavedModel served by `attend serve` (a subprocess on loopback, whose peak
  RSS is its own), with dynamic batching and without, under 1, 8 and 64 concurrent clients each
  sending one of the decode phase's short sentences per REST request: requests/s, p50/p90/p99
  latency, mean merged batch, errors; against the offline batch-64 throughput of the same export.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from app import load_test
from app.bench.decoding import (
    TUTORIAL,
    bucket_sources,
    format_decode,
    format_targets,
    headline_figures,
    targets,
)
from app.bench.prepare import (
    PREPARE_SIZES,
    QUICK_PREPARE_OVERRIDES,
    QUICK_PREPARE_SIZES,
    format_prepare,
    prepare_curve,
)
from app.models.cost import model_gflop_per_example, step_breakdown
from app.processes import run_python_for_json

BENCH_STYLES = ("bahdanau", "additive_after", "luong")
BENCH_PRECISIONS = ("float32", "mixed_bfloat16")
# The bench trains on short pairs; at small vocabularies (more pieces per sentence) the preset's token
# limit is raised in steps of `train.bucket_width` until at least this many pairs remain.
MIN_TRAIN_PAIRS = 256  # four batches of 64 distinct pairs
MIN_DEV_PAIRS = 32
# (SavedModel folder, beam width, `attend export --xla`, `--shortlist`) that decoding is timed on: each
# search's default export, its XLA one (compiled search for small batches) and its shortlisted one
SERVING_EXPORTS = (
    ("greedy", 1, False, False),
    ("beam4", 4, False, False),
    ("greedy_xla", 1, True, False),
    ("beam4_xla", 4, True, False),
    ("greedy_shortlist", 1, False, True),
    ("beam4_shortlist", 4, False, True),
)
# The `serve` phase: `attend serve` over the greedy export, loaded by closed-loop REST clients.
SERVE_EXPORT = "greedy"
SERVE_MODEL_NAME = "bench"
SERVE_CLIENTS = (1, 8, 64)
# The server settings compared: TF Serving's batching knobs as recommended for this model (chosen by
# hand among max_batch_size 64 × batch_timeout_micros 0/1000/2000 × num_batch_threads 1/2), and none.
BATCHING_FLAGS = (
    "--max_batch_size=64",
    "--batch_timeout_micros=2000",
    "--num_batch_threads=1",
    "--max_enqueued_batches=64",
)
SERVER_SETTINGS = {"batching": BATCHING_FLAGS, "no_batching": ("--no-batching",)}
# The goals, at the most clients with batching: requests/s at least this share of the offline batch-64
# sentences/s of the same export, p99 latency at most this multiple of its offline batch-1 p50, and
# batching at least this many times the requests/s of no batching.
THROUGHPUT_GOAL = 0.7
P99_GOAL = 4.0
BATCHING_GOAL = 1.5
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
    latency_calls: int = 30  # batch-1 calls per bucket and export
    decode_sentences: int = 512  # sentences per bucket, export and larger batch size …
    decode_min_calls: int = 2  # … in at least this many calls
    serving_steps: int = 800  # training steps of the model decoding is timed on
    load_requests: int = 6000  # per server setting and number of clients, at most …
    load_seconds: float = 20.0  # … and within this time
    load_warmup: int = 64  # unrecorded requests before (at least two per client)


QUICK_PLAN = BenchPlan(
    warmup_steps=3,
    windows=2,
    window_steps=3,
    dev_batches=2,
    latency_calls=3,
    decode_sentences=16,
    decode_min_calls=1,
    serving_steps=5,
    load_requests=64,  # at least one request per client at 64 clients
    load_seconds=1.5,
    load_warmup=8,
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


def matvec_gbytes_per_s(rows: int = 256, columns: int = 8192, repeats: int = 200) -> float:
    """GB/s at which this process streams a float32 weight matrix through a batch-1 product (a
    `[1, rows] · [rows, columns]` matmul, 8 MB by default, the size of an 8,000-piece vocabulary
    projection), chained in one graph as a decoder's steps are; the best of several timed runs."""
    vector = tf.random.stateless_normal([1, rows], seed=(1, 2))
    weights = tf.random.stateless_normal([rows, columns], seed=(3, 4))

    @tf.function
    def chain(vector, weights):
        for _ in tf.range(repeats):  # each product reads the whole matrix; its output feeds the next
            vector = tf.tanh(tf.matmul(vector, weights)[:, :rows])
        return vector

    chain(vector, weights).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        chain(vector, weights).numpy()
        best = min(best, time.perf_counter() - started)
    return 4 * rows * columns * repeats / best / 1e9


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
        config.model.architecture(),
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
            config.model.architecture(),
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
    """The `SERVING_EXPORTS` SavedModels of the same weights."""
    from app.translator import build_translator, float32_model, save_translator

    model = float32_model(model, config)
    for name, width, xla, shortlist in SERVING_EXPORTS:
        translator = build_translator(
            model,
            config,
            data.vocab_dir,
            data.tokenizers,
            beam_width=width,
            xla=xla,
            train_files=data.corpus.train_files,
            shortlist=shortlist,
        )
        card = {"bench": True, "config": config.to_dict()}  # the sizes the decode phase's bounds count
        save_translator(translator, export_dir / name, card, ["Hola."], log=lambda *_: None)


def run_serve_phase(
    export_dir: Path,
    sentences: list[str],
    plan: BenchPlan,
    clients: tuple[int, ...] = SERVE_CLIENTS,
    settings: dict[str, tuple[str, ...]] | None = None,
) -> dict:
    """The greedy export served by `attend serve` under each server setting (default: batching on and
    off), loaded by 1, 8 and 64 concurrent clients sending one sentence per request."""
    settings = SERVER_SETTINGS if settings is None else settings
    result = {
        "export": SERVE_EXPORT,
        "sentences": len(sentences),
        "mean_source_words": round(sum(len(s.split()) for s in sentences) / max(len(sentences), 1), 1),
        "max_requests": plan.load_requests,
        "max_seconds": plan.load_seconds,
        "servers": {},
    }
    with tempfile.TemporaryDirectory(prefix="attend-bench-serve-") as base:
        version = Path(base) / SERVE_MODEL_NAME / "1"  # a model base: BASE/NAME/<version>
        version.parent.mkdir()
        version.symlink_to((export_dir / SERVE_EXPORT).resolve(), target_is_directory=True)
        for label, flags in settings.items():
            result["servers"][label] = serve_under_load(Path(base), list(flags), sentences, clients, plan)
    return result


def serve_under_load(base: Path, flags: list[str], sentences: list[str], clients, plan: BenchPlan) -> dict:
    """One `attend serve` subprocess on free loopback ports, loaded by each number of clients in turn
    (after a warm-up); its peak RSS read before it is stopped (SIGTERM, then a kill if it hangs)."""
    command = [
        *(sys.executable, "-m", "app", "serve", "--model-base", str(base), "--model-name", SERVE_MODEL_NAME),
        *("--host", "127.0.0.1", "--rest-port", "0", "--grpc-port", "0", "--poll-seconds", "0", *flags),
    ]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "ATTEND_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    rows = []
    with load_test.ServerProcess(command, env=environment) as server:
        path = f"/v1/models/{SERVE_MODEL_NAME}:predict"
        bodies = [{"instances": [sentence]} for sentence in sentences]
        requests = load_test.post_requests(server.host, server.port, path, bodies)
        metrics = f"{server.rest}/monitoring/prometheus/metrics"
        for count in clients:
            warmup = max(plan.load_warmup, 2 * count)
            load_test.run_load(server.host, server.port, requests, count, warmup, plan.load_seconds)
            before = load_test.fetch_text(metrics)
            row = load_test.run_load(
                server.host, server.port, requests, count, plan.load_requests, plan.load_seconds
            )
            mean = load_test.mean_batch_size(before, load_test.fetch_text(metrics))
            rows.append({**row, "mean_batch_size": None if mean is None else round(mean, 2)})
        peak = server.peak_rss_mb()
    return {
        "flags": flags,
        "load": rows,
        "startup_s": round(server.startup_s, 1),
        "peak_rss_mb": None if peak is None else round(peak, 1),
        "exit_status": server.exit_status,
    }


def serve_goals(serve: dict, decode: dict) -> dict:
    """The serve phase against the issue's goals, at its most clients: batching's requests/s as a share
    of the offline batch-64 sentences/s of the same export (short sources), its p99 against the
    offline batch-1 p50, and batching against no batching. {} without both servers."""
    servers, offline = serve.get("servers", {}), decode.get(f"{SERVE_EXPORT}_short")
    if not {"batching", "no_batching"} <= set(servers) or offline is None:
        return {}
    clients = max(row["clients"] for row in servers["batching"]["load"])
    on = next(row for row in servers["batching"]["load"] if row["clients"] == clients)
    off = next(row for row in servers["no_batching"]["load"] if row["clients"] == clients)
    offline_rate = offline["sentences_per_s_batch64"]
    ratio = on["requests_per_s"] / offline_rate
    p99_limit = P99_GOAL * offline["latency_ms_batch1_p50"]
    speedup = on["requests_per_s"] / off["requests_per_s"] if off["requests_per_s"] else float("inf")
    return {
        "clients": clients,
        "offline_sentences_per_s_batch64": offline_rate,
        "requests_per_s": on["requests_per_s"],
        "ratio_to_offline_batch64": round(ratio, 3),
        "throughput_goal": THROUGHPUT_GOAL,
        "throughput_goal_met": ratio >= THROUGHPUT_GOAL,
        "offline_latency_ms_batch1_p50": offline["latency_ms_batch1_p50"],
        "latency_ms_p99": on["latency_ms_p99"],
        "p99_limit_ms": round(p99_limit, 2),
        "p99_goal_met": on["latency_ms_p99"] is not None and on["latency_ms_p99"] <= p99_limit,
        # Little's law: closed-loop clients at the throughput goal wait this long on average
        "mean_latency_ms_at_throughput_goal": round(1000 * clients / (THROUGHPUT_GOAL * offline_rate), 1),
        "no_batching_requests_per_s": off["requests_per_s"],
        "batching_speedup": round(speedup, 2),
        "batching_goal": BATCHING_GOAL,
        "batching_goal_met": speedup >= BATCHING_GOAL,
        "errors": sum(row["errors"] for server in servers.values() for row in server["load"]),
    }


def choose_token_limits(config, data) -> dict:
    """The preset's `max_source_tokens`/`max_target_tokens`, raised together until the length filter
    keeps MIN_TRAIN_PAIRS train and MIN_DEV_PAIRS dev pairs (or nothing longer is left)."""
    from app.data.prepare import token_lengths

    lengths = {
        split: list(zip(*token_lengths(path, data.vocab_dir), strict=True))
        for split, path in (("train", data.corpus.train_files), ("dev", data.corpus.dev))
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


def export_run_for_serving(run_dir: Path, export_dir: Path, data_dir: Path) -> dict:
    """The `SERVING_EXPORTS` SavedModels of a trained run, for decoding speed on real outputs."""
    from app.run import RunDir
    from app.translator import load_translator, save_translator

    run = RunDir(run_dir)
    card = {"bench": True, "config": run.config().to_dict()}  # the sizes the decode phase's bounds count
    for name, width, xla, shortlist in SERVING_EXPORTS:
        translator = load_translator(run, beam_width=width, xla=xla, shortlist=shortlist, data_dir=data_dir)
        save_translator(translator, export_dir / name, card, ["Hola."], log=lambda *_: None)
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
            report["serve_model"] = export_run_for_serving(serve_run, Path(scratch), data_dir)
            corpus_dir = data_dir / RunDir(serve_run).config().corpus_name
        else:
            log(f"bench: training the decoding model ({plan.serving_steps} steps) …")
            note = f"the bench model after {plan.serving_steps} training steps"
            sets = [f"--set={override}" for override in overrides]
            serving = _phase(["serving-model", *common, "--export-dir", scratch, *sets])
            report["serve_model"] = {"run": None, "note": note, **serving}
            corpus_dir = data_dir / config.corpus_name
        sources = bucket_sources(corpus_dir, Path(scratch) / SERVE_EXPORT / "assets" / "source.model")
        sources_file = Path(scratch) / "sources.json"
        sources_file.write_text(json.dumps(sources, ensure_ascii=False))
        quick_flag = ["--quick"] if quick else []
        log("bench: decoding with the reloaded SavedModels, by source length and batch size …")
        report["decode"] = _phase(
            ["decode", "--export-dir", scratch, "--sources", str(sources_file), *quick_flag]
        )
        log("bench: serving the greedy SavedModel under load (attend serve, batching on and off) …")
        report["serve"] = _phase(
            ["serve", "--export-dir", scratch, "--sources", str(sources_file), *quick_flag]
        )
        report["serve"]["goals"] = serve_goals(report["serve"], report["decode"])
    report["prepare"] = prepare_scale(preset, overrides, quick, data_dir, log)
    report |= headline_figures(report)
    report["targets"] = targets(report)
    output.write_text(json.dumps(report, indent=2) + "\n")
    log(format_table(report))
    log(f"Wrote {output}")
    return report


def prepare_scale(
    preset: str,
    overrides: list[str],
    quick: bool,
    data_dir: Path,
    log=print,
    sizes: tuple[int, ...] | None = None,
) -> dict:
    """The `prepare` phase at each size (`PREPARE_SIZES`, or the quick ones), one process each."""
    sizes = sizes or (QUICK_PREPARE_SIZES if quick else PREPARE_SIZES)
    sets = [f"--set={override}" for override in (*overrides, *(QUICK_PREPARE_OVERRIDES if quick else ()))]
    points = []
    for pairs in sizes:
        log(f"bench: attend prepare on {pairs:,} recombined pairs …")
        points.append(
            _phase(["prepare", "--preset", preset, "--data-dir", str(data_dir), "--pairs", str(pairs), *sets])
        )
    return prepare_curve(points)


def run_prepare_bench(
    preset: str,
    overrides: list[str],
    quick: bool,
    output: Path,
    data_dir: Path,
    log=print,
    sizes: tuple[int, ...] | None = None,
) -> dict:
    """Only the `prepare` scale curve (what `attend bench` adds at its end), written to `output`."""
    overrides = [*(QUICK_OVERRIDES if quick else []), *overrides]
    curve = prepare_scale(preset, overrides, quick, data_dir, log, sizes)
    report = {"machine": machine_description(), "preset": preset, "overrides": overrides, "prepare": curve}
    output.write_text(json.dumps(report, indent=2) + "\n")
    log("\n".join(format_prepare(curve)))
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
        f"{'training':<24}{'ex/s':>8}{'× tut.':>8}{'tok/s':>10}{'1st step s':>13}{'GFLOP/s':>9}{'util':>6}"
        f"{'dev loss':>10}{'RSS MB':>8}",
    ]
    for key, row in report["train"].items():
        to_tutorial = row["train_examples_per_s"] / TUTORIAL["train_examples_per_s"]
        lines.append(
            f"{key:<24}{row['train_examples_per_s']:>8.0f}{to_tutorial:>8.2f}"
            f"{row['train_target_tokens_per_s']:>10.0f}"
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
    lines += format_decode(report["decode"])
    lines.append(
        f"decoding peak RSS {report['decode']['peak_rss_mb']:.0f} MB; matmul peak "
        f"{next(iter(report['train'].values()))['matmul_peak_gflops']:.0f} GFLOP/s (float32)"
    )
    if report.get("serve"):
        lines += format_serve(report["serve"])
    if report.get("prepare"):
        lines += format_prepare(report["prepare"])
    if report.get("quick"):
        lines.append("--quick: a tiny model, so the targets below check the report, not the speed")
    lines += format_targets(report.get("targets") or targets(report))
    return "\n".join(lines)


def format_serve(serve: dict) -> list[str]:
    """The serve phase's rows (server setting × clients), its goals and the servers' peak RSS."""
    lines = [
        f"serving the {serve['export']} export over REST (attend serve on loopback): closed-loop clients, "
        f"one of {serve['sentences']} short sentences per request, at most "
        f"{serve['max_requests']:,} requests or {serve['max_seconds']:g} s a row",
        f"{'server':<14}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'mean batch':>12}{'errors':>8}",
    ]
    for label, server in serve["servers"].items():
        for row in server["load"]:
            batch = "-" if row["mean_batch_size"] is None else f"{row['mean_batch_size']:.1f}"
            lines.append(
                f"{label:<14}{row['clients']:>8}{row['requests_per_s']:>9.0f}{_ms(row['latency_ms_p50']):>9}"
                f"{_ms(row['latency_ms_p90']):>9}{_ms(row['latency_ms_p99']):>9}{batch:>12}{row['errors']:>8}"
            )
    for label, server in serve["servers"].items():
        lines.append(f"{label}: {' '.join(server['flags'])}")
    goals = serve.get("goals")
    if goals:
        lines.append(
            f"{goals['clients']} clients with batching: {goals['requests_per_s']:.0f} req/s = "
            f"{goals['ratio_to_offline_batch64']:.2f} × offline batch-64 "
            f"({goals['offline_sentences_per_s_batch64']:.0f} sent/s; goal ≥ {goals['throughput_goal']:.2f}: "
            f"{_met(goals['throughput_goal_met'])}); p99 {_ms(goals['latency_ms_p99'])} ms against "
            f"{goals['p99_limit_ms']:.1f} ms = {P99_GOAL:g} × batch-1 p50 ({_met(goals['p99_goal_met'])}; "
            f"at the goal's throughput {goals['clients']} clients wait "
            f"{goals['mean_latency_ms_at_throughput_goal']:.0f} ms on average)"
        )
        lines.append(
            f"without batching {goals['no_batching_requests_per_s']:.0f} req/s: batching "
            f"{goals['batching_speedup']:.1f}× (goal ≥ {goals['batching_goal']:g}×: "
            f"{_met(goals['batching_goal_met'])}); errors {goals['errors']}"
        )
    peaks = ", ".join(
        f"{label} {'?' if server['peak_rss_mb'] is None else format(server['peak_rss_mb'], '.0f')} MB"
        for label, server in serve["servers"].items()
    )
    lines.append(f"server peak RSS: {peaks}")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _met(flag: bool) -> str:
    return "met" if flag else "missed"
