"""Training callbacks beyond Keras's own: the divergence guard, fixed epoch summaries, the model
graph, dev BLEU with sample translations and attention images, the best score, the time budget,
hyperparameters."""

from __future__ import annotations

import collections
import errno
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import plugin_data_pb2 as hparams_plugin_data
from tensorboard.plugins.hparams import summary_v2 as hparams_summary

from app.plots import translation_heatmap


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss or a dev loss far above its first epoch's.

    Attributes: `epoch` (1-based), `step` (1-based within the epoch; None for a dev-loss check),
    `reason` (what was seen).
    """

    def __init__(self, reason: str, epoch: int, step: int | None = None):
        where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
        super().__init__(f"training diverged at {where}: {reason}")
        self.reason, self.epoch, self.step = reason, epoch, step


class DivergenceGuard(keras.callbacks.Callback):
    """Stops a diverging run before anything of the bad epoch is kept.

    It raises `TrainingDiverged` (instead of Keras's `TerminateOnNaN`, which lets the epoch end and
    so lets the checkpoint, the backup and the end of training run on broken weights): at the first
    non-finite training loss; at a training loss (Keras's mean over the epoch so far) above
    `UNTRAINED_FACTOR` times an untrained model's (ln of the target vocabulary's size: uniform
    guessing), or above that model's after growing `GROWTH_FACTOR`-fold within `GROWTH_WINDOW` steps;
    when an epoch's dev loss is non-finite, above `UNTRAINED_FACTOR` times the untrained model's (the
    first epoch's too, which the ratio below cannot judge), or above `factor` times the first
    epoch's. First in the callback list, so no later callback sees that epoch's end.

    Args:
        factor: the dev-loss ratio to the first epoch that counts as divergence (0 = no such check).
        first_dev_loss: the first epoch's dev loss of a resumed run (None: not measured yet).
        record_first_dev_loss: keeps the first epoch's dev loss (the run folder's record).
        untrained_loss: an untrained model's loss (None: ln of the model's output size at the start).
    """

    UNTRAINED_FACTOR = 10.0  # no run that learns comes near: its loss starts at 1x and falls
    GROWTH_FACTOR, GROWTH_WINDOW = 100.0, 200

    def __init__(
        self,
        factor: float,
        first_dev_loss: float | None,
        record_first_dev_loss: Callable[[float], None],
        untrained_loss: float | None = None,
    ):
        super().__init__()
        self.factor, self.first_dev_loss, self.record = factor, first_dev_loss, record_first_dev_loss
        self.untrained_loss = untrained_loss
        self._epoch = 0
        self._recent: collections.deque[float] = collections.deque(maxlen=self.GROWTH_WINDOW)

    def on_train_begin(self, logs=None):
        if self.untrained_loss is None:
            self.untrained_loss = untrained_loss(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the training loss became {loss}", self._epoch, batch + 1)
        problem = self._too_high("training loss", loss)
        lowest = min(self._recent, default=loss)
        grew = self.untrained_loss and loss > max(self.untrained_loss, self.GROWTH_FACTOR * lowest)
        if grew and not problem:
            problem = (
                f"the training loss grew from {lowest:.4g} to {loss:.4g} within {len(self._recent)} steps, "
                f"above an untrained model's ({self.untrained_loss:.3g})"
            )
        if problem:
            raise TrainingDiverged(problem, self._epoch, batch + 1)
        self._recent.append(loss)

    def _too_high(self, name: str, loss: float) -> str | None:
        if self.untrained_loss and loss > self.UNTRAINED_FACTOR * self.untrained_loss:
            return (
                f"the {name} {loss:.4g} is over {self.UNTRAINED_FACTOR:g} times an untrained model's "
                f"({self.untrained_loss:.3g}, the log of the vocabulary's size)"
            )
        return None

    def on_epoch_end(self, epoch, logs=None):
        dev_loss = (logs or {}).get("val_loss")
        if dev_loss is None:
            return
        dev_loss = float(dev_loss)
        if not math.isfinite(dev_loss):
            raise TrainingDiverged(f"the dev loss became {dev_loss}", epoch + 1)
        problem = self._too_high("dev loss", dev_loss)
        if problem:
            raise TrainingDiverged(problem, epoch + 1)
        if self.first_dev_loss is None:
            self.first_dev_loss = dev_loss
            self.record(dev_loss)
        elif self.factor and dev_loss > self.factor * self.first_dev_loss:
            raise TrainingDiverged(
                f"the dev loss {dev_loss:.4g} is over train.divergence_factor={self.factor:g} times the "
                f"first epoch's ({self.first_dev_loss:.4g})",
                epoch + 1,
            )


def untrained_loss(model: keras.Model) -> float | None:
    """ln(V) for a model whose output scores V target pieces: the cross-entropy of uniform guessing,
    about where training starts (5.99 for 400 pieces). None when the size is unknown."""
    outputs = getattr(model, "outputs", None) or []
    size = outputs[0].shape[-1] if outputs else None
    return math.log(size) if size and size > 1 else None


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, with epoch summaries that are never dropped and metrics first.

    Keras 3.15 leaves the last batch's `record_if(step % update_freq == 0)` active during
    `on_epoch_end`, so epoch-level scalars and histograms vanish whenever an epoch's last
    step is not a multiple of `update_freq`. Recording is forced on for the epoch summaries.
    Weight histograms go under `weights/`, apart from the metrics; Keras's
    `evaluation_<metric>_vs_iterations` (each dev metric again, one point per epoch on a steps
    axis, one card each among the metrics) is not written: `epoch_<metric>` has the same values.
    """

    def on_epoch_end(self, epoch, logs=None):
        with tf.summary.record_if(True):
            super().on_epoch_end(epoch, logs)

    def on_test_end(self, logs=None):
        self._pop_writer()  # what Keras does after writing the `evaluation_*_vs_iterations` points

    def _log_weights(self, epoch):
        with tf.name_scope("weights"):
            super()._log_weights(epoch)


class ModelGraphWriter(keras.callbacks.Callback):
    """Writes the forward pass's op graph for TensorBoard's Graphs tab.

    Keras 3.15's own `write_graph` looks for a tf.function attribute that TensorFlow 2.21 no
    longer has and silently writes nothing.
    """

    def __init__(self, log_dir: Path):
        super().__init__()
        self.log_dir = log_dir

    def on_train_begin(self, logs=None):
        ids = tf.TensorSpec([None, None], tf.int32)
        forward = tf.function(lambda source, target: self.model([source, target], training=False))
        writer = tf.summary.create_file_writer(str(self.log_dir / "train"))
        with writer.as_default(), tf.summary.record_if(True):
            tf.summary.graph(forward.get_concrete_function(ids, ids).graph)
        writer.close()


class CheckpointNotWritten(RuntimeError):
    """A checkpoint could not be written (a full disk, most often); nothing partial was left.

    Attributes: `path` (the checkpoint), `reason` (the system's words: "No space left on device").
    """

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{reason} while writing {path}")
        self.path, self.reason = path, reason


def save_weights_whole(model: keras.Model, path: Path, room_for: int = 1) -> None:
    """`model.save_weights(path)`, whole or not at all: written under a temporary name, then renamed,
    so that a failed write never leaves a truncated checkpoint. The free space is checked first (for
    `room_for` such files): on a full disk h5py's write fails, and the HDF5 library then crashes the
    process at exit (a segmentation fault) even when the error is caught. Raises `CheckpointNotWritten`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = room_for * weights_file_bytes(model)
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise CheckpointNotWritten(
            path, f"No space left on device ({free / 2**20:,.1f} MiB free, {needed / 2**20:,.1f} MiB needed)"
        )
    partial = path.with_name(f"partial-{path.name}")
    try:
        model.save_weights(str(partial))
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        full = error.errno == errno.ENOSPC or "No space left on device" in str(error)
        reason = "No space left on device" if full else (error.strerror or str(error))
        raise CheckpointNotWritten(path, reason) from error


def weights_file_bytes(model: keras.Model) -> int:
    """About the size of the model's `.weights.h5` (its variables and its optimizer's, plus HDF5's
    overhead)."""
    optimizer = getattr(model, "optimizer", None)
    variables = [*model.variables, *(optimizer.variables if optimizer is not None else [])]
    data = sum(math.prod(variable.shape) * _bytes_per_value(variable.dtype) for variable in variables)
    return int(1.1 * data) + 2**20


def _bytes_per_value(dtype) -> int:
    """4 for float32, 2 for bfloat16, 1 for bool."""
    bits = re.sub(r"\D", "", keras.backend.standardize_dtype(dtype))
    return max(int(bits or 8) // 8, 1)


class TrainingFinished(keras.callbacks.Callback):
    """Records (`record`) that every epoch is done, just before the backup callback after it deletes
    the backup: a run killed later, in its final evaluation or its export, then resumes there when
    started again instead of training from its first epoch. Keras calls `on_train_end` only when the
    epochs end (the last one, or early stopping, or the time budget), never after an error."""

    def __init__(self, record: Callable[[dict], None]):
        super().__init__()
        self.record, self._epochs = record, 0

    def on_epoch_end(self, epoch, logs=None):
        self._epochs += 1

    def on_train_end(self, logs=None):
        self.record({"epochs_this_session": self._epochs})


class EpochWeights(keras.callbacks.Callback):
    """Keeps the weights of the last `keep` epochs (for checkpoint averaging), deleting older ones.

    Args:
        path_of: `path_of(epoch)` (1-based) is where an epoch's weights go (`RunDir.epoch_weights`).
        keep: how many of the last epochs to keep (0: none).
    """

    def __init__(self, path_of: Callable[[int], Path], keep: int):
        super().__init__()
        self.path_of, self.keep = path_of, keep

    def on_epoch_end(self, epoch, logs=None):
        if not self.keep:
            return
        # room for the backup too, which Keras writes next (h5py crashes the process on a full disk)
        save_weights_whole(self.model, self.path_of(epoch + 1), room_for=3)
        for old in range(1, epoch + 2 - self.keep):
            self.path_of(old).unlink(missing_ok=True)


def improves(logs: dict, monitor: str, mode: str, best: dict | None) -> bool:
    """Whether an epoch's dev scores (`logs`) beat the kept checkpoint's (`best`: its record's "value"
    and "metrics", None: anything does): a better `monitor`, or under `mode="max"` (BLEU) the same one
    at a lower dev loss. BLEU ties where a model does not translate yet (0.22 at epochs 2 and 10 of a
    small run) while its loss still falls; without the tie-break the run would keep its second epoch."""
    value = logs[monitor]
    if best is None:
        return True
    if value != best["value"]:
        return value > best["value"] if mode == "max" else value < best["value"]
    loss, best_loss = logs.get("val_loss"), best.get("metrics", {}).get("val_loss")
    return mode == "max" and loss is not None and best_loss is not None and loss < best_loss


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the weights of the best epoch by `improves` (`RUN/checkpoints/best.weights.h5`, written
    whole before it replaces the last: a kill while saving leaves the previous best), keeps its score
    on disk so that a resumed run continues from it, and writes the kept checkpoint's dev metrics to
    TensorBoard after every epoch.

    The `kept/<metric>` and `kept/epoch` scalars (in the run's top log folder, beside its HParams
    record) follow the checkpoint that was kept, not the last epoch: HParams shows the exported
    model's scores, and a chart of `epoch_bleu` beside `kept/val_bleu` marks the best epoch.

    Args:
        weights_path: where the best weights go (a `.weights.h5` file).
        record: `record(monitor, value, epoch, metrics)` writes the score (the run's `write_best_score`).
        monitor, mode: the logged metric and whether higher ("max") or lower ("min") is better.
        best: the best record so far (`{"value", "epoch", "metrics"}`, or None: any value improves).
        log_dir: where the `kept/…` scalars go (None: not written).
    """

    def __init__(
        self,
        weights_path: Path,
        record: Callable[..., None],
        monitor: str,
        mode: str,
        best: dict | None,
        log_dir: Path | None = None,
    ):
        super().__init__()
        self.weights_path, self.record, self.log_dir = Path(weights_path), record, log_dir
        self.monitor, self.mode, self.best_record = monitor, mode, best
        self._writer = None

    @property
    def best(self) -> float | None:
        return self.best_record["value"] if self.best_record else None

    @property
    def kept(self) -> dict:
        """The kept epoch's dev metrics and its number (TensorBoard's `kept/…`), {} before one."""
        if not self.best_record:
            return {}
        return {**self.best_record.get("metrics", {}), "epoch": self.best_record["epoch"]}

    def on_train_begin(self, logs=None):
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if logs.get(self.monitor) is None:
            return
        if improves(logs, self.monitor, self.mode, self.best_record):
            save_weights_whole(self.model, self.weights_path)
            metrics = {key: float(item) for key, item in logs.items() if key.startswith("val_")}
            value = float(logs[self.monitor])
            self.best_record = {"value": value, "epoch": epoch + 1, "metrics": metrics}
            self.record(self.monitor, value, epoch + 1, metrics)
        if self._writer is not None and self.kept:
            with self._writer.as_default(), tf.summary.record_if(True):
                for key, item in self.kept.items():
                    tf.summary.scalar(f"kept/{key}", item, step=epoch)
            self._writer.flush()


def plan_epochs(budget_seconds: float, epoch_seconds: list[float], max_epochs: int) -> int:
    """How many epochs the run gets, once `epoch_seconds` (the finished ones') are known: those done
    and as many more as the time left holds at the last epoch's pace, at most `max_epochs`."""
    done = len(epoch_seconds)
    if not done:
        return max_epochs
    more = int(max(budget_seconds - sum(epoch_seconds), 0.0) // max(epoch_seconds[-1], 1e-9))
    return min(done + more, max_epochs)


class TimeBudget(keras.callbacks.Callback):
    """Fits the run into `train.max_minutes`: after each epoch it plans how many epochs fit
    (`plan_epochs`), hands the plan to `follow_plan(epochs)` (which shortens the learning-rate schedule
    and moves early stopping's start) and stops the run once that many are done. An epoch's time runs
    from its start to this callback at its end, so it holds the dev evaluation and checkpointing of
    the callbacks before it (the first epoch's also holds tracing: its plan errs short, and the next
    epoch's plan corrects it). The epochs' seconds and the plan are kept by `record` (the run folder),
    and a resumed run starts from them: the interrupted part of an epoch is not counted.

    Args:
        minutes: the budget.
        max_epochs: `train.epochs`, the most a plan may hold.
        follow_plan: called with the planned epoch count each time it is made (and at a resumed start).
        saved: the record of an interrupted run (`{"epoch_seconds", "planned_epochs"}`) or None.
        record: `record(state)` keeps that record.
    """

    def __init__(
        self,
        minutes: float,
        max_epochs: int,
        follow_plan: Callable[[int], None],
        saved: dict | None,
        record: Callable[[dict], None],
    ):
        super().__init__()
        self.budget_seconds, self.max_epochs = 60.0 * minutes, max_epochs
        self.follow_plan, self.record = follow_plan, record
        self.epoch_seconds = list((saved or {}).get("epoch_seconds", []))
        self.planned = (saved or {}).get("planned_epochs", max_epochs)
        self._started = 0.0

    def on_train_begin(self, logs=None):
        if self.epoch_seconds:  # resumed: the schedule the run had when it stopped
            self.follow_plan(self.planned)

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self._started
        # epochs whose time was lost (a resumed run without its record) count at this one's pace
        earlier = self.epoch_seconds[:epoch] + [seconds] * (epoch - len(self.epoch_seconds))
        self.epoch_seconds = [*earlier, seconds]
        self.planned = plan_epochs(self.budget_seconds, self.epoch_seconds, self.max_epochs)
        self.follow_plan(self.planned)
        self.record(
            {
                "max_minutes": self.budget_seconds / 60.0,
                "epoch_seconds": [round(value, 3) for value in self.epoch_seconds],
                "planned_epochs": self.planned,
            }
        )
        if logs is not None:
            logs["planned_epochs"] = self.planned  # in TensorBoard and the progress line
        if epoch + 1 >= self.planned:
            self.model.stop_training = True


class DevTranslationMonitor(keras.callbacks.Callback):
    """Translates the dev split (or its first `train.bleu_sentences`) after every epoch: BLEU into the
    logs as `val_bleu` (so that checkpoints and early stopping can monitor it, and the TensorBoard
    callback after it writes it once, as `epoch_bleu` of the validation run) with its 95 % confidence
    margin as `val_bleu_ci95` (the noise that one epoch's BLEU over another's must clear to mean
    anything), sample translations as text, and attention heatmaps as images.

    Args:
        translator: the Translator over the model being trained (`translate_texts` and the
            `translate_with_attention` tf.function).
        bleu: `bleu(hypotheses, references)` → (corpus BLEU, half-width of its 95 % confidence
            interval): the scoring module's `bleu_with_confidence`.
        sources, references: the dev subset; `references[i]` lists sentence i's references.
        log_dir: the run's TensorBoard folder; summaries go to its `validation/` run.
        samples, heatmaps: how many sentences to show as text and as attention images.
    """

    def __init__(
        self,
        translator,
        bleu: Callable[[list[str], list[list[str]]], float],
        sources: list[str],
        references: list[list[str]],
        log_dir: Path,
        samples: int = 5,
        heatmaps: int = 2,
    ):
        super().__init__()
        self.translator, self.bleu, self.sources, self.references = translator, bleu, sources, references
        self.log_dir, self.samples, self.heatmaps = log_dir, samples, heatmaps

    def on_epoch_end(self, epoch, logs=None):
        hypotheses = self.translator.translate_texts(self.sources)
        bleu, margin = self.bleu(hypotheses, self.references)
        if logs is not None:
            logs["val_bleu"] = bleu
            logs["val_bleu_ci95"] = margin
        with self._writer.as_default(), tf.summary.record_if(True):
            tf.summary.text("dev_translations", self._table(hypotheses), step=epoch)
            for index, image in enumerate(self._heatmaps()):
                tf.summary.image(f"attention/dev_{index}", image[None], step=epoch)
        self._writer.flush()

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(str(self.log_dir / "validation"))

    def on_train_end(self, logs=None):
        self._writer.close()

    def _table(self, hypotheses: list[str]) -> str:
        rows = ["| source | reference | translation |", "|---|---|---|"]
        rows += [
            f"| {markdown_cell(source)} | {markdown_cell(refs[0])} | {markdown_cell(hypothesis)} |"
            for source, refs, hypothesis in zip(
                self.sources[: self.samples], self.references, hypotheses, strict=False
            )
        ]
        return "\n".join(rows)

    def _heatmaps(self) -> list[tf.Tensor]:
        sentences = self.sources[: self.heatmaps]
        if not sentences:
            return []
        out = self.translator.translate_with_attention(tf.constant(sentences))
        return [
            tf.image.decode_png(
                translation_heatmap(
                    *(out[key][row].numpy() for key in ("source_tokens", "target_tokens", "attention")),
                    title=sentence,
                ),
                channels=3,
            )
            for row, sentence in enumerate(sentences)
        ]


MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#~])")


def markdown_cell(text: str) -> str:
    """`text` shown literally in a Markdown table cell (TensorBoard's Text tab renders Markdown):
    `|` would end the cell, `*`, `_`, `<`… would format or vanish."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


# Ticked in TensorBoard's HParams table by default. Its page ticks the first five hyperparameters,
# those marked as differing between runs first, so these five are marked; the others are a click away.
HPARAMS_SHOWN = (
    "model.attention_style",
    "model.cell",
    "model.units",
    "train.learning_rate",
    "train.precision",
)
KEPT_METRICS = (
    ("kept/val_bleu", "dev BLEU (kept checkpoint)"),
    ("kept/val_loss", "dev loss (kept checkpoint)"),
    ("kept/val_perplexity", "dev perplexity (kept checkpoint)"),
    ("kept/epoch", "epoch kept"),
)


def write_hparams(log_dir: Path, config: dict, run_name: str) -> None:
    """The run's settings for TensorBoard's HParams dashboard, beside the kept checkpoint's dev
    metrics (`BestCheckpoint`'s `kept/…` scalars: the exported model's, not the last epoch's),
    and the landing charts of the Custom Scalars tab (`write_layout`)."""
    flat = {
        f"{section}.{key}": _shown_as_written(value)
        for section, values in config.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if isinstance(value, (bool, int, float, str))
    }
    experiment = hparams_summary.hparams_config_pb(
        hparams=[hparams_api.HParam(name) for name in flat],
        metrics=[hparams_api.Metric(tag, display_name=shown) for tag, shown in KEPT_METRICS],
    )
    plugin_data = experiment.value[0].metadata.plugin_data
    content = hparams_plugin_data.HParamsPluginData.FromString(plugin_data.content)
    for info in content.experiment.hparam_infos:
        info.differs = info.name in HPARAMS_SHOWN
    plugin_data.content = content.SerializeToString()
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(), tf.summary.record_if(True):
        tf.summary.experimental.write_raw_pb(experiment.SerializeToString(), step=0)
        hparams_api.hparams(flat, trial_id=run_name)
        write_layout()
    writer.close()


def _shown_as_written(value):
    """Integers as text: the HParams table prints every number with five significant digits, so
    `units=32` would read "32.000" (a sizes' sweep is a set of values anyway, not a continuum)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def write_layout() -> None:
    """The Custom Scalars tab: the charts that answer "is it learning, and which epoch is best?"."""
    charts = [
        ("loss: train and dev", [r"^epoch_loss$"]),
        ("dev BLEU, and the kept checkpoint's", [r"^epoch_bleu$", r"^kept/val_bleu$"]),
        ("perplexity: train and dev", [r"^epoch_perplexity$"]),
        ("token accuracy: train and dev", [r"^epoch_token_accuracy$"]),
        ("learning rate", [r"^epoch_learning_rate$"]),
    ]
    layout = layout_pb2.Layout(
        category=[
            layout_pb2.Category(
                title="At a glance",
                chart=[
                    layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=tags))
                    for title, tags in charts
                ],
            )
        ]
    )
    tf.summary.experimental.write_raw_pb(custom_scalar_summary.pb(layout).SerializeToString(), step=0)
