"""Training: corpus → tokenizers → tf.data → compile + `model.fit` with callbacks → export.

A run folder holds everything of one run: `config.yaml` (resolved), `vocab/`, `logs/`
(TensorBoard), `checkpoints/` (best dev BLEU, or dev loss), `backup/` (while unfinished: BackupAndRestore
state, so that starting the same run again resumes it) and `export/` (the SavedModel).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from app import __version__
from app.callbacks import BestScoreRecord, DevTranslationMonitor, ModelGraphWriter, TensorBoard, write_hparams
from app.config import Config, TrainConfig, load_config, same_settings, save_config
from app.data.corpus import PreparedCorpus, prepare_corpus
from app.data.pipeline import count_batches, make_dataset
from app.data.tokenizer import (
    SubwordTokenizer,
    fit_tokenizers,
    load_tokenizer,
    read_side,
    round_trip_failures,
)
from app.evaluate import read_references
from app.export import (
    BEST_WEIGHTS,
    MODEL_CARD_NAME,
    Translator,
    build_translator,
    export_translator,
    float32_model,
)
from app.models.losses import MaskedTokenAccuracy, masked_cross_entropy
from app.models.precision import training_policy
from app.models.seq2seq import build_model

BEST_SCORE = "checkpoints/best.json"
BACKUP_DIR = "backup"
ROUND_TRIP_SAMPLE = 2000


@dataclass(frozen=True)
class PreparedData:
    corpus: PreparedCorpus
    vocab_dir: Path
    source_tokenizer: SubwordTokenizer
    target_tokenizer: SubwordTokenizer
    round_trip_failures: dict[str, int]


def prepare_data(config: Config, data_dir: Path, log=print) -> PreparedData:
    """Prepared splits plus fitted tokenizers, both cached under `data_dir` and reused when unchanged."""
    corpus = prepare_corpus(config, data_dir, log=log)
    settings = dataclasses.asdict(config.tokenizer)
    vocab_name = (
        f"vocab-{settings['model_type']}-{settings['source_vocab_size']}-{settings['target_vocab_size']}"
    )
    vocab_dir = corpus.directory / vocab_name
    paths = fit_tokenizers(corpus.train, vocab_dir, settings, log=log)
    source, target = (
        load_tokenizer(paths["source"], "source_tokenizer"),
        load_tokenizer(paths["target"], "target_tokenizer"),
    )
    failures = {}
    for column, (side, tokenizer) in enumerate((("source", source), ("target", target))):
        sample = list(read_side(corpus.dev, column, ROUND_TRIP_SAMPLE))
        bad = round_trip_failures(tokenizer, sample)
        failures[side] = len(bad)
        log(
            f"{side} tokenizer: {tokenizer.vocab_size} pieces; round trip exact on {len(sample) - len(bad)}"
            f"/{len(sample)} dev sentences" + (f"; first failure: {bad[0]}" if bad else "")
        )
    return PreparedData(corpus, vocab_dir, source, target, failures)


def make_optimizer(train: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam with linear warm-up, cosine decay and gradient-norm clipping."""
    warmup = min(train.warmup_steps, max(total_steps // 10, 1))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup, 1),
        alpha=train.min_learning_rate_ratio,
        warmup_target=train.learning_rate,
        warmup_steps=warmup,
    )
    return keras.optimizers.Adam(learning_rate=schedule, clipnorm=train.clipnorm)


def compile_model(config: Config, data: PreparedData, total_steps: int) -> keras.Model:
    """The model for `config`, compiled for training (precision policy, loss, metrics, optimizer)."""
    keras.mixed_precision.set_global_policy(training_policy(config.train.precision))
    model = build_model(
        data.source_tokenizer.vocab_size, data.target_tokenizer.vocab_size, **dataclasses.asdict(config.model)
    )
    model.compile(
        optimizer=make_optimizer(config.train, total_steps),
        loss=masked_cross_entropy,
        metrics=[MaskedTokenAccuracy()],
        jit_compile=config.train.jit_compile,
    )
    return model


def make_callbacks(
    run_dir: Path, train: TrainConfig, monitor: keras.callbacks.Callback | None
) -> list[keras.callbacks.Callback]:
    """Keras's callbacks in the order that matters: the dev monitor adds `val_bleu` to the epoch's
    logs before the checkpoint and early stopping read them."""
    metric, mode = ("val_bleu", "max") if monitor else ("val_loss", "min")
    best_path = run_dir / BEST_SCORE
    best = json.loads(best_path.read_text())["value"] if best_path.is_file() else None
    return [
        keras.callbacks.BackupAndRestore(str(run_dir / BACKUP_DIR)),
        keras.callbacks.TerminateOnNaN(),
        *([monitor] if monitor else []),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / BEST_WEIGHTS),
            monitor=metric,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best,
        ),
        BestScoreRecord(best_path, metric, mode, best),
        keras.callbacks.EarlyStopping(monitor=metric, mode=mode, patience=train.early_stopping_patience),
        ModelGraphWriter(run_dir / "logs"),
        TensorBoard(
            profile_batch=tuple(int(step) for step in train.profile_batches.split(","))
            if train.profile_batches
            else 0,
            log_dir=str(run_dir / "logs"),
            update_freq=train.log_every_steps,
            histogram_freq=train.histogram_epochs,
        ),
    ]


def make_dev_monitor(model: keras.Model, config: Config, data: PreparedData, run_dir: Path):
    """Greedy dev BLEU, sample translations and attention images each epoch (None if disabled)."""
    if not config.train.bleu_sentences:
        return None
    sources, references = read_references(data.corpus.dev)
    tokenizers = (data.source_tokenizer, data.target_tokenizer)
    translator = build_translator(model, config, run_dir / "vocab", tokenizers, beam_width=1)
    count = config.train.bleu_sentences
    return DevTranslationMonitor(translator, sources[:count], references[:count], run_dir / "logs")


def check_resumable(run_dir: Path, config: Config) -> None:
    """A run folder may be resumed only with the config it started with."""
    saved = run_dir / "config.yaml"
    if saved.is_file() and not same_settings(load_config(str(saved)), config):
        raise ValueError(
            f"{run_dir} holds a run with a different config ({saved}); pick a new --run-dir "
            "or train with exactly that config to resume it"
        )


def train(
    config: Config, run_dir: Path, data_dir: Path = Path("data"), log=print, export: bool = True
) -> dict:
    """Trains (resuming an interrupted run in `run_dir`), keeps the best weights (dev BLEU, or dev
    loss when `train.bleu_sentences=0`), exports."""
    check_resumable(run_dir, config)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    keras.utils.set_random_seed(config.train.seed)
    data = prepare_data(config, data_dir, log=log)
    shutil.copytree(data.vocab_dir, run_dir / "vocab", dirs_exist_ok=True)
    train_set, dev_set = make_datasets(config, data)
    steps_per_epoch = config.train.steps_per_epoch or count_batches(train_set)
    log(
        f"Training on {data.corpus.report.get('splits', {}).get('train', '?')} pairs: "
        f"{steps_per_epoch} steps per epoch, at most {config.train.epochs} epochs"
    )
    model = compile_model(config, data, steps_per_epoch * config.train.epochs)
    write_hparams(run_dir / "logs", config.to_dict(), run_dir.name)
    started = time.time()
    history = model.fit(
        train_set.repeat(),
        epochs=config.train.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=dev_set,
        shuffle=False,  # the tf.data pipeline shuffles
        callbacks=make_callbacks(run_dir, config.train, make_dev_monitor(model, config, data, run_dir)),
        verbose="auto",
    )
    seconds = time.time() - started
    if (run_dir / BEST_WEIGHTS).is_file():
        model.load_weights(str(run_dir / BEST_WEIGHTS))
    metrics = final_metrics(model, dev_set, history, seconds, model.count_params())
    log(f"Best weights: dev loss {metrics['dev_loss']:.4f}, accuracy {metrics['dev_token_accuracy']:.4f}")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    card = model_card(config, data, metrics)
    (run_dir / MODEL_CARD_NAME).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    tokenizers = (data.source_tokenizer, data.target_tokenizer)
    translator = build_translator(float32_model(model, config), config, run_dir / "vocab", tokenizers)
    log_sample_translations(translator, data.corpus.dev, log)
    if export:
        export_translator(translator, run_dir, card, list(read_side(data.corpus.dev, 0, 8)), log=log)
    return metrics


def log_sample_translations(translator: Translator, dev_tsv: Path, log=print, count: int = 10) -> None:
    """Translations (the run's decoding) of the first dev sentences beside their references."""
    sources, references = list(read_side(dev_tsv, 0, count)), list(read_side(dev_tsv, 1, count))
    translations = translator.translate(tf.constant(sources))["translation"].numpy()
    for source, reference, translation in zip(sources, references, translations, strict=True):
        log(f"  source:      {source}\n  reference:   {reference}\n  translation: {translation.decode()}\n")


def make_datasets(config: Config, data: PreparedData) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    common = {
        "batch_size": config.train.batch_size,
        "max_source_tokens": config.train.max_source_tokens,
        "max_target_tokens": config.train.max_target_tokens,
        "bucket_width": config.train.bucket_width,
    }
    tokenizers = (data.source_tokenizer, data.target_tokenizer)
    train_set = make_dataset(
        data.corpus.train,
        *tokenizers,
        shuffle_buffer=config.train.shuffle_buffer,
        seed=config.train.seed,
        **common,
    )
    dev_set = make_dataset(data.corpus.dev, *tokenizers, **common)
    # a known length lets Keras start a fresh pass over the dev set at every validation
    return train_set, dev_set.apply(tf.data.experimental.assert_cardinality(count_batches(dev_set)))


def final_metrics(
    model: keras.Model, dev_set: tf.data.Dataset, history, seconds: float, parameters: int
) -> dict:
    dev_loss, dev_accuracy = model.evaluate(dev_set, verbose=0)
    epochs = len(history.history.get("loss", []))
    return {
        "dev_loss": float(dev_loss),
        "dev_token_accuracy": float(dev_accuracy),
        "epochs_this_session": epochs,
        "train_seconds_this_session": round(seconds, 1),
        "parameters": int(parameters),
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
    }


def model_card(config: Config, data: PreparedData, metrics: dict) -> dict:
    return {
        "name": config.name,
        "source_language": config.data.source_language,
        "target_language": config.data.target_language,
        "data": {"corpus": config.corpus_name, "report": data.corpus.report},
        "tokenizers": {
            "source_vocab_size": data.source_tokenizer.vocab_size,
            "target_vocab_size": data.target_tokenizer.vocab_size,
            "round_trip_failures": data.round_trip_failures,
        },
        "config": config.to_dict(),
        "training_policy": training_policy(config.train.precision),  # what train.precision resolved to
        "metrics": {key: value for key, value in metrics.items() if key != "history"},
        "signatures": {
            "serving_default": "text: string [batch] -> translation: string [batch], score: float32 [batch]",
            "translate_with_attention": "serving_default's outputs + attention: float32 [batch, tgt, src], "
            "source_tokens: string [batch, src], target_tokens: string [batch, tgt]",
            "translate_ids": "source_ids: int32 [batch, src] (0-padded, ending with 2) -> ids: int32 "
            "[batch, decode.max_output_tokens], lengths: int32 [batch], score: float32 [batch]; greedy, XLA",
        },
        "decoding": {
            "beam_width": config.decode.beam_width,
            "length_penalty_alpha": config.decode.length_penalty_alpha,
        },
        "versions": {"attend": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }
