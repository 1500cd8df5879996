"""The bench's `train` and `serving-model` phases: training throughput and FLOP/s of each attention
style and precision, and the model (trained for a few hundred steps, or a user's run) exported as the
SavedModels that the decode and serve phases time."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import keras

from app.bench.decoding import bleu_on_test, export_translate
from app.bench.host import matmul_peak_gflops, peak_rss_mb
from app.bench.plan import BenchPlan
from app.bench.report import ServingModel, TokenLimits, TrainRow
from app.models.cost import model_gflop_per_example, step_breakdown

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
SCORED_EXPORT = "greedy"  # the export whose BLEU is set beside the tutorial's


class StepTimer(keras.callbacks.Callback):
    """Records when fit started and when each training step ended."""

    def on_train_begin(self, logs=None):
        self.started, self.ends = time.perf_counter(), []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


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


def run_train_phase(config, data_dir: Path, plan: BenchPlan) -> TrainRow:
    """Trains for warm-up + timed windows on short sentence pairs and reports throughput and FLOP/s."""
    from app.data.pipeline import mean_batch_rows
    from app.data.prepare import prepare_data
    from app.recipe import compile_model, make_datasets

    keras.utils.set_random_seed(config.train.seed)
    data = prepare_data(config, data_dir, log=lambda *_: None)
    train_set, dev_set = make_datasets(config, data)
    source_tokens, target_tokens = mean_tokens(train_set.take(50))
    # examples/s counts pairs: with train.batch_tokens a step's pairs vary, their mean over a pass
    rows = mean_batch_rows(train_set) if config.train.batch_tokens else config.train.batch_size
    steps = plan.warmup_steps + plan.windows * plan.window_steps
    peak = matmul_peak_gflops()
    model = compile_model(config, data, steps)
    timer = StepTimer()
    model.fit(train_set.repeat(), epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    examples_per_s = steady_state_rate(timer.ends, plan, rows)
    dev_loss = float(model.evaluate(dev_set.take(plan.dev_batches), verbose=0)[0])
    architecture, target_vocab = config.model.architecture(), data.target_tokenizer.vocab_size
    gflop = model_gflop_per_example(
        architecture, data.source_tokenizer.vocab_size, target_vocab, source_tokens, target_tokens
    )
    breakdown = step_breakdown(
        architecture, target_vocab, round(rows), round(target_tokens) + 1, plan.window_steps
    )
    return TrainRow(
        time_to_first_step_s=round(timer.ends[0] - timer.started, 2),
        train_examples_per_s=round(examples_per_s, 1),
        train_target_tokens_per_s=round(examples_per_s * target_tokens, 1),
        mean_source_tokens=round(source_tokens, 2),
        mean_target_tokens=round(target_tokens, 2),
        model_gflop_per_example=round(gflop, 4),
        achieved_gflops=round(examples_per_s * gflop, 2),
        matmul_peak_gflops=round(peak, 1),
        utilization=round(examples_per_s * gflop / peak, 4),
        steps=steps,
        dev_loss_after_steps=round(dev_loss, 4),
        parameters=int(model.count_params()),
        step_breakdown_ms=breakdown,
        peak_rss_mb=round(peak_rss_mb(), 1),  # after the step breakdown's own models
    )


def mean_tokens(batches) -> tuple[float, float]:
    """Mean real (non-padding) source and target-output tokens per pair over some batches."""
    source_total = target_total = pairs = 0
    for (source, _), target_out in batches:
        source_total += int((source != 0).numpy().sum())
        target_total += int((target_out != 0).numpy().sum())
        pairs += int(source.shape[0])
    return source_total / max(pairs, 1), target_total / max(pairs, 1)


def steady_state_rate(step_ends: list[float], plan: BenchPlan, batch_size: float) -> float:
    """Median examples/s over the timed windows that follow the warm-up steps."""
    rates = []
    for window in range(plan.windows):
        first = plan.warmup_steps + window * plan.window_steps - 1
        elapsed = step_ends[first + plan.window_steps] - step_ends[first]
        rates.append(plan.window_steps * batch_size / elapsed)
    return statistics.median(rates)


def run_serving_model_phase(config, data_dir: Path, plan: BenchPlan, export_dir: Path) -> ServingModel:
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
    note = f"the bench model after {plan.serving_steps} training steps"
    bleu, sentences = bleu_on_test(
        export_translate(export_dir / SCORED_EXPORT), data.corpus.test, plan.bleu_sentences
    )
    return ServingModel(
        run=None,
        note=note,
        steps=plan.serving_steps,
        dev_loss=round(dev_loss, 4),
        bleu=bleu,
        bleu_sentences=sentences,
    )


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
        warm = with_warmup(translator, config, data.corpus.dev, xla)
        save_translator(translator, export_dir / name, card, ["Hola."], log=lambda *_: None, extras=warm)


def with_warmup(translator, config, dev_file: Path, xla: bool):
    """`save_translator`'s `extras`: TF Serving's warm-up records from the dev split's sentences, as
    `attend export` writes them."""
    from app.translator import XLA_MAX_BATCH, XLA_MIN_SOURCE_LENGTH
    from app.warmup import dev_sentences, write_translator_warmup

    def write(staging: Path) -> None:
        write_translator_warmup(
            staging,
            translator,
            dev_sentences(dev_file),
            xla_max_batch=XLA_MAX_BATCH[translator.decoding_strategy.name] if xla else None,
            min_length=XLA_MIN_SOURCE_LENGTH,
            max_input_tokens=config.decode.max_input_tokens,
            log=lambda *_: None,
        )

    return write


def export_run_for_serving(
    run_dir: Path,
    export_dir: Path,
    data_dir: Path,
    bleu_sentences: int | None = None,
    exports: tuple[str, ...] | None = None,
    score: bool = True,
) -> ServingModel:
    """The `SERVING_EXPORTS` SavedModels of a trained run (those named in `exports`, default all),
    for decoding speed on real outputs; and the BLEU of its greedy export on the first
    `bleu_sentences` of its corpus's test split (None where `exports` leaves it out, or without
    `score`: a caller that scores every export itself)."""
    from app.run import RunDir
    from app.translator import load_translator, save_translator

    run = RunDir(run_dir)
    card = {"bench": True, "config": run.config().to_dict()}  # the sizes the decode phase's bounds count
    chosen = [export for export in SERVING_EXPORTS if exports is None or export[0] in exports]
    for name, width, xla, shortlist in chosen:
        translator = load_translator(run, beam_width=width, xla=xla, shortlist=shortlist, data_dir=data_dir)
        warm = with_warmup(translator, run.config(), data_dir / run.config().corpus_name / "dev.tsv", xla)
        save_translator(translator, export_dir / name, card, ["Hola."], log=lambda *_: None, extras=warm)
    bleu, sentences = None, None
    if score and any(name == SCORED_EXPORT for name, *_ in chosen):
        test_file = data_dir / run.config().corpus_name / "test.tsv"
        scored = export_translate(export_dir / SCORED_EXPORT)
        bleu, sentences = bleu_on_test(scored, test_file, bleu_sentences)
    return ServingModel(
        run=str(run_dir),
        parameters=int(translator.model.count_params()),
        source_vocab=translator.source_tokenizer.vocab_size,
        target_vocab=translator.target_tokenizer.vocab_size,
        bleu=bleu,
        bleu_sentences=sentences,
    )


def choose_token_limits(config, data) -> TokenLimits:
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
    return TokenLimits(
        max_source_tokens=source_limit,
        max_target_tokens=target_limit,
        train_pairs=kept("train"),
        dev_pairs=kept("dev"),
        train_pairs_before_filter=len(lengths["train"]),
        dev_pairs_before_filter=len(lengths["dev"]),
    )
