"""`attend train`: prepared data → the training recipe → `model.fit` in a locked run folder → the
best weights, metrics and model card. Export is its own activity (`attend export`); the command
line runs it after training.
"""

from __future__ import annotations

import dataclasses
import errno
import shutil
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

from app import __version__
from app.config import Config
from app.data.prepare import PreparedData, check_enough_pairs, corpora_report, filter_report, prepare_data
from app.data.tokenizer import read_side, vocabulary
from app.models.precision import describe_policy, training_policy
from app.progress import shows_progress
from app.recipe import (
    check_batch_divides,
    compile_model,
    epoch_steps,
    held_out_perplexity,
    make_callbacks,
    make_datasets,
    mean_pairs_per_batch,
    schedule_of,
    shard_input_function,
)
from app.recipe.callbacks import CheckpointNotWritten, DevTranslationMonitor, TrainingDiverged, write_hparams
from app.recipe.distribution import Distribution, WorkerRole, resolve_distribution
from app.recipe.embeddings import apply_pretrained_embeddings
from app.recipe.strategy_loop import DevEvaluation, DevScores, StrategyLoop
from app.recipe.transfer import Parent, initialize_from, read_parent
from app.recipe.transfer import describe as describe_initialization
from app.run import RunDir
from app.scoring import bleu_with_confidence, read_references
from app.translator import Translator, build_translator, float32_model

SAMPLE_TRANSLATIONS = 10


def train(config: Config, run_dir: Path, data_dir: Path = Path("data"), log=print) -> dict:
    """Trains (resuming an interrupted run in `run_dir`) and keeps the best weights: by dev BLEU,
    or by dev loss when `train.bleu_sentences=0`. Returns the final metrics.

    Under `train.distribution=multi_worker` every machine runs this with the same `run_dir`; only
    the chief writes it, the others write into scratch folders they remove (`RunDir.scratch_for_worker`).
    Nothing is written into the run folder before the data has passed every check. Raises
    `RunFailed` (after recording it in the folder) when the loss diverges: the last good
    checkpoint stays, and `attend export` refuses the run."""
    distribution = resolve_distribution(config.train)
    role = distribution.role()
    strategy = distribution.strategy()  # first: MultiWorkerMirroredStrategy must precede every TF op
    log(f"{distribution.describe(strategy)}" + (f", {role.description}" if role.count > 1 else ""))
    log(describe_policy(config.train.precision))
    if not config.train.batch_tokens:  # batches of tokens: each bucket's rows are made to divide
        check_batch_divides(config.train.batch_size, strategy.num_replicas_in_sync)
    chief_run = RunDir(run_dir)
    run = chief_run if role.is_chief else chief_run.scratch_for_worker(role.index)
    if not role.is_chief:
        log(f"{role.description} writes into the scratch folder {run}; the chief writes {chief_run}")
    try:
        with run.lock(create=True):
            if role.is_chief:
                run.check_resumable(config)
            # before any tokenizer runs: seeding clears TF's eager kernel cache, and with it the
            # SentencePiece kernel resource an eager tokenizer call created
            keras.utils.set_random_seed(config.train.seed)
            parent = read_parent(RunDir(config.train.init_from)) if config.train.init_from else None
            data = prepare_data(config, data_dir, log=log)
            filtered = filter_report(data, config.train.max_source_tokens, config.train.max_target_tokens)
            for counts in filtered.values():
                log(counts.describe())
                check_enough_pairs(counts, 1 if config.train.batch_tokens else config.train.batch_size)
                for warning in counts.warnings():
                    log(f"Note: {warning}")
            run.start(config, log=log)
            done = _finished_metrics(chief_run)  # every worker asks the chief's folder: all or none train
            if done:
                log(f"{chief_run} finished training and its final evaluation earlier: nothing to train")
                return done
            failure = run.failure()
            if failure:
                log(f"The last attempt failed ({failure['message']}); resuming from its last backup")
            try:
                trainer = Trainer(distribution, strategy, role, config.train.label_smoothing)
                return _fit(config, data, run, filtered, trainer, log, parent)
            except TrainingDiverged as diverged:
                raise _record_divergence(run, diverged) from diverged
            except CheckpointNotWritten as failed:
                raise _write_failed(run, failed.reason, failed.path) from failed
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                raise _write_failed(run, "No space left on device", error.filename or run.path) from error
    finally:
        if not role.is_chief:
            run.remove()


class Trainer:
    """How this process trains: Keras's `fit`, or the strategy loop where `fit` fails (multi_worker)."""

    def __init__(
        self,
        distribution: Distribution,
        strategy: tf.distribute.Strategy,
        role: WorkerRole,
        label_smoothing: float = 0.0,
    ):
        self.distribution, self.strategy, self.role = distribution, strategy, role
        self.label_smoothing = label_smoothing
        # Keras's validation under a strategy fails on a dev batch that splits unevenly (strategy_loop)
        self.keras_validates = distribution.runs_fit and strategy.num_replicas_in_sync == 1
        self.dev_evaluation: DevEvaluation | None = None  # one traced function for every epoch and the end

    def record(self) -> dict:
        """What trained, for the metrics and the model card."""
        return {
            "setting": self.distribution.train.distribution,
            "strategy": type(self.strategy).__name__,
            "replicas": self.strategy.num_replicas_in_sync,
            "workers": self.role.count,
            "loop": "model.fit"
            if self.distribution.runs_fit
            else "strategy.run (app/recipe/strategy_loop.py)",
        }

    def datasets(self, config: Config, data: PreparedData) -> tuple[tf.data.Dataset, tf.data.Dataset, int]:
        """Train and dev sets and the steps of one epoch: one pass over the train split at
        train.batch_size (under multi_worker, about one pass over each worker's shard at its share
        of the batch; each worker then reads its own shard, see `fit`); with data.corpora, one pass
        over the main corpus's train split (`epoch_steps`)."""
        shapes = self.distribution.static_shapes, self.strategy.num_replicas_in_sync
        train_set, dev_set = make_datasets(config, data, *shapes)
        return train_set, dev_set, epoch_steps(config, data, train_set, *shapes)

    def mean_pairs_per_batch(self, config: Config, data: PreparedData) -> float:
        """Pairs per train batch on average over a pass (what `train.batch_tokens` gives)."""
        return mean_pairs_per_batch(
            config, data, self.distribution.static_shapes, self.strategy.num_replicas_in_sync
        )

    def dev_scores(self, model: keras.Model, dev_set: tf.data.Dataset) -> DevScores | None:
        """The callback that puts the dev scores into the logs, where Keras's validation does not."""
        if self.keras_validates:
            return None
        self.dev_evaluation = DevEvaluation(model, self.label_smoothing)
        return DevScores(self.dev_evaluation, dev_set)

    def fit(self, model: keras.Model, config: Config, data: PreparedData, sets, callbacks):
        (train_set, dev_set, steps), epochs = sets, config.train.epochs
        verbose = progress_verbosity()
        if self.distribution.runs_fit:
            return model.fit(
                train_set.repeat(),
                epochs=epochs,
                steps_per_epoch=steps,
                validation_data=dev_set if self.keras_validates else None,
                shuffle=False,  # the tf.data pipeline shuffles
                callbacks=callbacks,
                verbose=verbose,
            )
        loop = StrategyLoop(model, self.strategy, self.label_smoothing)
        return loop.fit(
            shard_input_function(config, data),
            epochs=epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=verbose,
        )

    def evaluate(self, model: keras.Model, dataset: tf.data.Dataset) -> dict[str, float]:
        """`loss`, `token_accuracy` and `perplexity` of the model's current weights on `dataset`."""
        if self.keras_validates:
            return {
                key: float(value)
                for key, value in model.evaluate(dataset, verbose=0, return_dict=True).items()
            }
        return (self.dev_evaluation or DevEvaluation(model, self.label_smoothing))(dataset)


def progress_verbosity() -> int:
    """Keras's `verbose` for training: the progress bar (1) where a person watches stdout, one summary
    per epoch (2) where it goes to a file, a pipe or a cluster job's log, which would otherwise hold
    the bar redrawn at every step; `ATTEND_PROGRESS=0/1` forces either (`app.progress`)."""
    return 1 if shows_progress(sys.stdout) else 2


def _fit(
    config: Config,
    data: PreparedData,
    run: RunDir,
    filtered: dict,
    trainer: Trainer,
    log,
    parent: Parent | None = None,
) -> dict:
    shutil.copytree(data.vocab_dir, run.vocab_dir, dirs_exist_ok=True)
    train_set, dev_set, steps_per_epoch = sets = trainer.datasets(config, data)
    budget = config.train.max_minutes
    log(
        f"Training on {filtered['train'].kept:,} pairs: {steps_per_epoch} steps per epoch, "
        f"at most {config.train.epochs} epochs"
        + (f", as many as fit in {budget:g} minutes (planned after each epoch)" if budget else "")
    )
    if config.train.batch_tokens:  # the schedule stays as set: the user scales it to the batch
        log(
            f"Batches of about {config.train.batch_tokens:,} tokens (train.batch_tokens): "
            f"{trainer.mean_pairs_per_batch(config, data):.1f} pairs a batch on average; "
            f"train.learning_rate {config.train.learning_rate:g} is not scaled for it"
        )
    if config.tokenizer.sampling_alpha:
        tokenizer = config.tokenizer
        sides = "sources and targets" if tokenizer.sample_target else "sources"
        log(
            f"Subword regularisation: every epoch draws the segmentation of the train {sides} (alpha "
            f"{tokenizer.sampling_alpha:g}, n-best {tokenizer.sampling_nbest}); dev, test and the export "
            "read the best"
        )
    total_steps = steps_per_epoch * config.train.epochs
    model, coverage = _compile_with_initial_weights(config, data, run, trainer, parent, total_steps, log)
    started = time.time()
    if run.training_finished():  # killed after its last epoch: nothing is trained or logged again
        log(f"Every epoch of {run} is done; resuming at its final evaluation")
        shutil.rmtree(run.backup_dir, ignore_errors=True)  # left by a kill just before its removal
        history = keras.callbacks.History()  # of this session, which trains no epoch
    else:
        write_hparams(run.logs_dir, config.to_dict(), run.name)
        monitor = make_dev_monitor(model, config, data, run)
        dev_scores = trainer.dev_scores(model, dev_set)
        schedule = schedule_of(model)
        callbacks = make_callbacks(run, config.train, monitor, dev_scores, schedule, steps_per_epoch)
        history = trainer.fit(model, config, data, sets, callbacks)
    seconds = time.time() - started
    if run.is_trained:
        model.load_weights(str(run.best_weights))
    serving_model = float32_model(model, config)
    test = held_out_perplexity(serving_model, config, data.tokenizers, data.corpus.test)
    scores = {"dev": trainer.evaluate(model, dev_set), "test": test}
    metrics = {**final_metrics(model, scores, history, seconds), "distribution": trainer.record()}
    if budget:
        metrics["time_budget"] = run.time_budget()
    log(
        f"Best weights: dev loss {metrics['dev_loss']:.4f}, accuracy {metrics['dev_token_accuracy']:.4f}, "
        f"perplexity {metrics['dev_perplexity']:.2f} (test: {metrics['test_perplexity']:.2f})"
    )
    run.clear_failure()
    run.write_metrics(metrics)
    run.write_model_card(model_card(config, data, filtered, metrics, run.init_report(), coverage or None))
    if trainer.role.is_chief:
        translator = build_translator(
            serving_model, config, run.vocab_dir, data.tokenizers, train_files=data.corpus.train_files
        )
        log_sample_translations(translator, data.corpus.dev, log)
    return metrics


def _compile_with_initial_weights(
    config: Config,
    data: PreparedData,
    run: RunDir,
    trainer: Trainer,
    parent: Parent | None,
    total_steps: int,
    log,
) -> tuple[keras.Model, dict]:
    """The compiled model, starting from pretrained word vectors (`model.*_embeddings`) or from a
    parent run's weights (`train.init_from`) where the config says so; and the vectors' coverage
    by side (empty without vectors)."""
    coverage: dict = {}
    model = compile_model(
        config,
        data,
        total_steps,
        trainer.strategy,
        before_compile=lambda built: coverage.update(apply_pretrained_embeddings(built, config.model, data)),
    )
    for side, record in coverage.items():
        log(
            f"Pretrained {side} embeddings from {record['file']}: {record['pieces_found']:,} of "
            f"{record['vocabulary_size']:,} pieces found ({100 * record['share']:.1f} %)"
            + (", frozen" if config.model.freeze_embeddings else "")
        )
    if parent and not run.is_unfinished and not run.training_finished():  # else its own weights come back
        vocabularies = {side: vocabulary(data.vocab_dir / f"{side}.model") for side in ("source", "target")}
        with trainer.strategy.scope():
            report = initialize_from(model, parent, config.train.init_parts, vocabularies)
        run.write_init_report(report)
        for line in describe_initialization(report):
            log(line)
    return model, coverage


class RunFailed(RuntimeError):
    """Training stopped without a model worth exporting; the message says why and what remains."""


def _finished_metrics(run: RunDir) -> dict | None:
    """The final metrics of a run whose epochs and final evaluation are all done (a kill stopped its
    export, which the command line runs next), else None."""
    if not run.training_finished():
        return None
    try:
        metrics = run.metrics()
        card = run.model_card()
    except ValueError:  # damaged by the kill: the final evaluation writes them again
        return None
    return metrics if metrics and metrics.get("status") == "trained" and card else None


def _write_failed(run: RunDir, reason: str, path) -> RunFailed:
    """A checkpoint or record that could not be written (a full disk): the run stops, resumable;
    nothing is recorded as failed (the disk may hold nothing more), the last good checkpoint stays."""
    best = run.best_score() if run.is_trained else None
    kept = (
        f"the last good checkpoint is {run.best_weights} (epoch {best['epoch']})"
        if best
        else "no checkpoint was kept yet"
    )
    return RunFailed(f"{reason} while writing {path}; {kept}; free space and run the same command to resume")


def _record_divergence(run: RunDir, diverged: TrainingDiverged) -> RunFailed:
    """Writes what happened into the run folder (so that `attend export` refuses the run) and
    returns the error to raise, naming the last good checkpoint and what to change."""
    best = run.best_score() if run.is_trained else None
    failure = {"message": str(diverged), "reason": diverged.reason, "epoch": diverged.epoch}
    run.write_failure({**failure, "step": diverged.step, "last_good": best})
    run.write_metrics({"status": "diverged", "failure": failure})
    if best:
        remains = (
            f"The last good checkpoint remains: {run.best_weights} (epoch {best['epoch']}, "
            f"{best['monitor']} {best['value']:.4g}); `attend export --force {run}` exports it."
        )
    else:
        remains = "No epoch ended well, so no checkpoint was kept."
    reuse = "" if run.has_trained_epoch else " (this --run-dir may be reused)"
    return RunFailed(
        f"{diverged}. {remains} Lower train.learning_rate or raise train.warmup_steps and train again{reuse}."
    )


def make_dev_monitor(model: keras.Model, config: Config, data: PreparedData, run: RunDir):
    """Greedy dev BLEU (with its confidence margin), sample translations and attention images each
    epoch (None if disabled)."""
    if config.train.bleu_sentences == 0:
        return None
    sources, references = read_references(data.corpus.dev)
    translator = build_translator(
        model, config, run.vocab_dir, data.tokenizers, beam_width=1, train_files=data.corpus.train_files
    )
    count = config.train.bleu_sentences  # None: the whole dev split
    return DevTranslationMonitor(
        translator, bleu_with_confidence, sources[:count], references[:count], run.logs_dir
    )


def log_sample_translations(translator: Translator, dev_tsv: Path, log=print) -> None:
    """Translations (the run's decoding) of the first dev sentences beside their references."""
    sources = list(read_side(dev_tsv, 0, SAMPLE_TRANSLATIONS))
    references = list(read_side(dev_tsv, 1, SAMPLE_TRANSLATIONS))
    for source, reference, translation in zip(
        sources, references, translator.translate_texts(sources), strict=True
    ):
        log(f"  source:      {source}\n  reference:   {reference}\n  translation: {translation}\n")


def final_metrics(model: keras.Model, scores: dict[str, dict], history, seconds: float) -> dict:
    """`scores`: `{"dev": Trainer.evaluate's, "test": held_out_perplexity's}`."""
    epochs = len(history.history.get("loss", []))
    return {
        "status": "trained",
        "dev_loss": scores["dev"]["loss"],
        "dev_token_accuracy": scores["dev"]["token_accuracy"],
        "dev_perplexity": scores["dev"]["perplexity"],
        "test_perplexity": scores["test"]["perplexity"],  # as `attend evaluate` reports it
        "epochs_this_session": epochs,
        "train_seconds_this_session": round(seconds, 1),
        "parameters": int(model.count_params()),
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
    }


def model_card(
    config: Config,
    data: PreparedData,
    filtered: dict,
    metrics: dict,
    initialised_from: dict | None = None,
    pretrained_embeddings: dict | None = None,
) -> dict:
    """`initialised_from`: the parent run and what was reused of it (`app.recipe.transfer`);
    `pretrained_embeddings`: the word vectors' coverage by side (`app.recipe.embeddings`)."""
    return {
        "name": config.name,
        "initialised_from": initialised_from,
        "pretrained_embeddings": pretrained_embeddings,
        "source_language": config.data.source_language,
        "target_language": config.data.target_language,
        "data": {
            "corpus": config.corpus_name,
            "report": data.corpus.report,
            "corpora": corpora_report(config, data, filtered),  # each training corpus: pairs, weight
            "length_filter": {split: counts.as_dict() for split, counts in filtered.items()},
        },
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
            "translate_nbest": "text: string [batch] -> translations: string [batch, K], scores: float32 "
            "[batch, K], normalized_scores: float32 [batch, K]; the K = decoding.beam_width hypotheses of "
            'the beam, best first ("" and -inf where fewer exist)',
            "translate_ids": "source_ids: int32 [batch, src] (0-padded, ending with 2) -> ids: int32 "
            "[batch, decode.max_output_tokens], lengths: int32 [batch], score: float32 [batch]; greedy, "
            "XLA-compilable",
            "translate_with_alignment": "serving_default's outputs + alignment: string [batch] (Pharaoh "
            "source-target word pairs, one per target word)",
            "score": "source: string [batch], target: string [batch] -> score: float32 [batch] (log P of "
            "target, end token included), tokens: int32 [batch], normalized_score: float32 [batch], "
            "token_scores: float32 [batch, tgt]; forced decoding",
            "sample": "text: string [batch], seed: int64 [], temperature: float32 [], topk: int32 [] "
            "(0 = all) -> serving_default's outputs, drawn instead of searched",
            "input_handling": "text must be a 1-D string tensor (other shapes raise InvalidArgumentError); "
            "invalid UTF-8 in text is replaced before tokenizing, each invalid byte sequence by one U+FFFD "
            "(as Python's bytes.decode('utf-8', 'replace')); translate_ids raises InvalidArgumentError for "
            "ids outside [0, tokenizers.source_vocab_size)",
        },
        "decoding": dataclasses.asdict(config.decode),
        "versions": {"attend": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }
