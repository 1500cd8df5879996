"""Training callbacks beyond Keras's own: fixed epoch summaries, the model graph, dev BLEU with
sample translations and attention images, the best score, hyperparameters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from app.plots import translation_heatmap


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, with epoch summaries that are never dropped.

    Keras 3.15 leaves the last batch's `record_if(step % update_freq == 0)` active during
    `on_epoch_end`, so epoch-level scalars and histograms vanish whenever an epoch's last
    step is not a multiple of `update_freq`. Recording is forced on for the epoch summaries.
    """

    def on_epoch_end(self, epoch, logs=None):
        with tf.summary.record_if(True):
            super().on_epoch_end(epoch, logs)


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


class BestScoreRecord(keras.callbacks.Callback):
    """Keeps the best monitored dev score on disk, so that a resumed run's checkpointing continues from it.

    Args:
        record: `record(monitor, value, epoch)` writes it (the run folder's `write_best_score`).
        monitor, mode: the logged metric and whether higher ("max") or lower ("min") is better.
        best: the best value so far (None: any value improves).
    """

    def __init__(
        self, record: Callable[[str, float, int], None], monitor: str, mode: str, best: float | None
    ):
        super().__init__()
        self.record, self.monitor, self.mode, self.best = record, monitor, mode, best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        improved = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if improved:
            self.best = float(value)
            self.record(self.monitor, self.best, epoch + 1)


class DevTranslationMonitor(keras.callbacks.Callback):
    """Translates a fixed dev subset after every epoch: BLEU into the logs (so checkpoints and
    early stopping can monitor `val_bleu`) and TensorBoard, sample translations as text, and
    attention heatmaps as images.

    Args:
        translator: the Translator over the model being trained (`translate_texts` and the
            `translate_with_attention` tf.function).
        bleu: `bleu(hypotheses, references)` → corpus BLEU (the scoring module's `corpus_bleu`).
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
        bleu = self.bleu(hypotheses, self.references)
        if logs is not None:
            logs["val_bleu"] = bleu
        with self._writer.as_default(), tf.summary.record_if(True):
            tf.summary.scalar("epoch_bleu", bleu, step=epoch)
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
            f"| {source} | {refs[0]} | {hypothesis} |"
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


def write_hparams(log_dir: Path, config: dict, run_name: str) -> None:
    """The run's settings for TensorBoard's HParams dashboard, beside its dev loss and BLEU."""
    flat = {
        f"{section}.{key}": value
        for section, values in config.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if isinstance(value, (bool, int, float, str))
    }
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(), tf.summary.record_if(True):
        hparams_api.hparams_config(
            hparams=[hparams_api.HParam(name) for name in flat],
            metrics=[
                hparams_api.Metric("epoch_bleu", group="validation", display_name="dev BLEU"),
                hparams_api.Metric("epoch_loss", group="validation", display_name="dev loss"),
            ],
        )
        hparams_api.hparams(flat, trial_id=run_name)
    writer.close()
