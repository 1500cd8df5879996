"""Training with `strategy.run` where Keras's `fit` does not work, and dev scores that need no strategy.

`StrategyLoop` stands in for `model.fit` under MultiWorkerMirroredStrategy and nothing more: the
same compiled model, optimizer (with its loss scaling under mixed_float16), loss, callbacks (the
same list, driven through Keras's `CallbackList`, so checkpoints, early stopping, TensorBoard, the
dev BLEU monitor and BackupAndRestore behave as under `fit`) and the same logs: `loss` is the mean
of the batches' losses weighted by their rows, `token_accuracy` is pooled over the epoch's tokens.
Each worker reads its own shard of the training pairs (`make_train_set(input_context)`), and every
worker runs the same number of steps, so none waits for a collective that another never joins.

`DevScores` puts `val_loss` and `val_token_accuracy` into the epoch's logs wherever the model has
more than one replica. Keras's own validation under a strategy first reduces the dev set's first
batch over the replicas to build the model, which fails whenever that batch splits unevenly (a
length bucket's last, smaller batch). It runs on each worker over the whole dev set, outside
`strategy.run`: every worker holds the same weights, so all see the same dev scores and take the
same decisions (checkpoint, early stopping, divergence) without exchanging them.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from app.models.losses import perplexity, token_hits, token_loss_sum

SUM = tf.distribute.ReduceOp.SUM


def token_counts(labels: tf.Tensor, logits: tf.Tensor, label_smoothing: float = 0.0) -> list[tf.Tensor]:
    """[rows, summed token loss (with `label_smoothing`: the training objective), summed token
    cross-entropy, correct tokens, tokens] of one batch (or one replica's part of it): sums that add
    up over replicas, from which `EpochMeans` makes Keras's logs."""
    loss_sum, tokens = token_loss_sum(labels, logits, label_smoothing)
    nll_sum = token_loss_sum(labels, logits)[0] if label_smoothing else loss_sum
    correct, _ = token_hits(labels, logits)
    return [tf.cast(tf.shape(labels)[0], tf.float32), loss_sum, nll_sum, correct, tokens]


class EpochMeans:
    """Keras's epoch logs: each batch's mean token loss averaged with its rows as weights, the token
    accuracy and perplexity pooled over all tokens (as `MaskedTokenAccuracy`, `MaskedPerplexity`)."""

    def __init__(self):
        self.loss_rows = self.rows = self.nll_sum = self.correct = self.tokens = 0.0

    def add(self, rows: float, loss_sum: float, nll_sum: float, correct: float, tokens: float) -> None:
        self.loss_rows += rows * loss_sum / max(tokens, 1.0)
        self.rows += rows
        self.nll_sum += nll_sum
        self.correct += correct
        self.tokens += tokens

    def logs(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}loss": self.loss_rows / self.rows if self.rows else float("nan"),
            f"{prefix}token_accuracy": self.correct / self.tokens if self.tokens else 0.0,
            f"{prefix}perplexity": perplexity(self.nll_sum, self.tokens),
        }


class DevEvaluation:
    """The dev measures of Keras's logs (`loss`, `token_accuracy`) over a whole dataset, on this
    process alone (no replicas: the weights are read as they are)."""

    def __init__(self, model: keras.Model, label_smoothing: float = 0.0):
        self.model, self.label_smoothing = model, label_smoothing
        self._batch = tf.function(self._counts)

    def _counts(self, source, target_in, target_out):
        logits = self.model([source, target_in], training=False)
        return token_counts(target_out, logits, self.label_smoothing)

    def counts(self, dataset: tf.data.Dataset):
        """`token_counts` of each batch, as Python floats."""
        for (source, target_in), target_out in dataset:
            yield [float(value) for value in self._batch(source, target_in, target_out)]

    def __call__(self, dataset: tf.data.Dataset, prefix: str = "") -> dict[str, float]:
        means = EpochMeans()
        for counts in self.counts(dataset):
            means.add(*counts)
        return means.logs(prefix)


class DevScores(keras.callbacks.Callback):
    """Adds `val_loss` and `val_token_accuracy` to each epoch's logs, for the callbacks after it."""

    def __init__(self, evaluation: DevEvaluation, dev_set: tf.data.Dataset):
        super().__init__()
        self.evaluation, self.dev_set = evaluation, dev_set

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.evaluation(self.dev_set, prefix="val_"))


class StrategyLoop:
    """`fit` of a compiled model built in `strategy.scope()`, with `strategy.run`.

    Args:
        model: compiled with `app.recipe.compile_model` inside `strategy.scope()`.
        strategy: the strategy whose scope built it.
        label_smoothing: the compiled loss's (`train.label_smoothing`), for the logged loss.
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, label_smoothing: float = 0.0):
        self.model, self.strategy, self.label_smoothing = model, strategy, label_smoothing
        self._train_step = tf.function(self._distributed_step)

    def _replica_step(self, batch):
        (source, target_in), target_out = batch
        model, optimizer = self.model, self.model.optimizer
        with tf.GradientTape() as tape:
            logits = model([source, target_in], training=True)
            loss = model.loss(target_out, logits)  # this replica's share of the global mean
            scaled = optimizer.scale_loss(loss)  # mixed_float16: Keras's loss scaling (else unchanged)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return token_counts(target_out, logits, self.label_smoothing)

    def _distributed_step(self, iterator):
        results = self.strategy.run(self._replica_step, args=(next(iterator),))
        return [self.strategy.reduce(SUM, value, axis=None) for value in results]

    def fit(
        self,
        make_train_set: Callable[[tf.distribute.InputContext], tf.data.Dataset],
        *,
        epochs: int,
        steps_per_epoch: int,
        callbacks: list[keras.callbacks.Callback],
        verbose: int = 1,
    ) -> keras.callbacks.History:
        """Trains like `model.fit(train, epochs, steps_per_epoch, callbacks)`; the dev scores come from
        a `DevScores` callback among `callbacks`.

        `make_train_set(input_context)` returns this input pipeline's endless dataset of
        per-replica batches (`tf.distribute.Strategy.distribute_datasets_from_function`)."""
        model = self.model
        listed = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0, model=model,
            verbose=verbose, epochs=epochs, steps=steps_per_epoch,
        )  # fmt: skip
        iterator = iter(self.strategy.distribute_datasets_from_function(make_train_set))
        model.stop_training = False
        with self.strategy.scope():  # BackupAndRestore builds the optimizer's variables to restore them
            listed.on_train_begin()
        initial_epoch = model._initial_epoch or 0  # where BackupAndRestore's backup says to resume
        logs: dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            logs = self._train_epoch(epoch, iterator, steps_per_epoch, listed)
            listed.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        listed.on_train_end(logs)
        return model.history

    def _train_epoch(self, epoch: int, iterator, steps: int, listed: keras.callbacks.CallbackList) -> dict:
        listed.on_epoch_begin(epoch)
        means = EpochMeans()
        for step in range(steps):
            listed.on_train_batch_begin(step)
            means.add(*(float(value) for value in self._train_step(iterator)))
            listed.on_train_batch_end(step, means.logs())
            if self.model.stop_training:
                break
        return means.logs()
