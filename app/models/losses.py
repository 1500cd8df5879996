"""Masked token-level loss, perplexity and accuracy: label 0 is padding and counts for nothing."""

from __future__ import annotations

import functools
import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="attend")
def masked_cross_entropy(labels, logits):
    """Mean cross-entropy over the non-padding target tokens of the whole (global) batch.

    Under a `tf.distribute` strategy each replica holds a slice of the batch with its own number of
    rows and target tokens (`distributed_share`). Without one, the plain masked mean.
    """
    return _masked_mean(*token_loss_sum(labels, logits), labels)


def label_smoothed_cross_entropy(label_smoothing: float):
    """`masked_cross_entropy` against targets that give `label_smoothing` of each token's probability
    mass to the whole vocabulary evenly (Szegedy et al. 2016; 0.1 in the Transformer paper). 0: the
    plain loss itself."""
    if not label_smoothing:
        return masked_cross_entropy
    return functools.update_wrapper(
        functools.partial(_smoothed_cross_entropy, label_smoothing=label_smoothing), _smoothed_cross_entropy
    )


def _smoothed_cross_entropy(labels, logits, label_smoothing: float):
    return _masked_mean(*token_loss_sum(labels, logits, label_smoothing), labels)


def _masked_mean(total, tokens, labels):
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return total / tf.maximum(tokens, 1.0)
    return distributed_share(total, tokens, tf.cast(tf.shape(labels)[0], tf.float32), context)


def token_loss_sum(labels, logits, label_smoothing: float = 0.0) -> tuple[tf.Tensor, tf.Tensor]:
    """(summed cross-entropy, count) of the non-padding target tokens; with `label_smoothing` ε,
    against `(1 − ε)·one_hot + ε/V`: `(1 − ε)·NLL + ε·mean over the vocabulary of −log p`."""
    mask = tf.cast(tf.not_equal(labels, 0), tf.float32)
    logits = tf.cast(logits, tf.float32)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), logits)
    if label_smoothing:
        uniform = -tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1)
        losses = (1.0 - label_smoothing) * losses + label_smoothing * uniform
    return tf.reduce_sum(losses * mask), tf.reduce_sum(mask)


def perplexity(loss_sum: float, tokens: float) -> float:
    """exp of the mean per-target-token cross-entropy (padding excluded): what the model's uncertainty
    amounts to in choices per token. Capped (exp(700) is near float64's largest) for a diverged loss."""
    return math.exp(min(loss_sum / tokens, 700.0)) if tokens else float("nan")


def token_hits(labels, logits) -> tuple[tf.Tensor, tf.Tensor]:
    """(correctly predicted, count) of the non-padding target tokens."""
    labels = tf.cast(labels, tf.int32)
    mask = tf.not_equal(labels, 0)
    hits = tf.logical_and(mask, tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels))
    return tf.reduce_sum(tf.cast(hits, tf.float32)), tf.reduce_sum(tf.cast(mask, tf.float32))


def distributed_share(total, tokens, rows, context: tf.distribute.ReplicaContext) -> tf.Tensor:
    """One replica's loss, such that training and its logs equal those of the undivided batch.

    - The gradient: this replica's token-loss sum over the token count of all replicas (an
      all-reduce). Keras sums the replicas' gradients and leaves a scalar loss unscaled, so the
      sum is the gradient of the batch's mean. (A mean per replica would weight the replica with
      fewer tokens more, and summed over replicas multiply the gradient by their number.)
    - The value: Keras logs the replicas' losses times their number, averaged with the replicas'
      rows as weights; the value is scaled by `rows / (replicas × replica rows)` so that this
      average is the batch's mean even when a batch splits unevenly (the last of a length bucket).
    """
    replicas = float(context.num_replicas_in_sync)
    share = total / tf.maximum(context.all_reduce(tf.distribute.ReduceOp.SUM, tokens), 1.0)
    all_rows = context.all_reduce(tf.distribute.ReduceOp.SUM, rows)
    logged = tf.math.divide_no_nan(share * all_rows, replicas * rows)
    return share + tf.stop_gradient(logged - share)


@keras.saving.register_keras_serializable(package="attend")
class MaskedTokenAccuracy(keras.metrics.Metric):
    """Share of non-padding target tokens predicted exactly, pooled over all tokens seen
    (not a mean of per-batch means, which would over-weight short batches)."""

    def __init__(self, name="token_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, labels, logits, sample_weight=None):
        correct, total = token_hits(labels, logits)
        self.correct.assign_add(correct)
        self.total.assign_add(total)

    def result(self):
        return tf.math.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)


@keras.saving.register_keras_serializable(package="attend")
class MaskedPerplexity(keras.metrics.Metric):
    """exp of the mean cross-entropy per non-padding target token, pooled over all tokens seen (the
    loss without label smoothing: perplexity is the likelihood's, not the training objective's)."""

    def __init__(self, name="perplexity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.loss_sum = self.add_variable(shape=(), initializer="zeros", name="loss_sum")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, labels, logits, sample_weight=None):
        loss_sum, total = token_loss_sum(labels, logits)
        self.loss_sum.assign_add(loss_sum)
        self.total.assign_add(total)

    def result(self):
        return tf.exp(tf.minimum(tf.math.divide_no_nan(self.loss_sum, self.total), 80.0))

    def reset_state(self):
        self.loss_sum.assign(0.0)
        self.total.assign(0.0)
