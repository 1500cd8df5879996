"""Masked token-level loss and accuracy: label 0 is padding and counts for nothing."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="attend")
def masked_cross_entropy(labels, logits):
    """Mean cross-entropy over the non-padding target tokens of the whole (global) batch.

    Under a `tf.distribute` strategy each replica holds a slice of the batch with its own number of
    rows and target tokens (`distributed_share`). Without one, the plain masked mean.
    """
    total, tokens = token_loss_sum(labels, logits)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return total / tf.maximum(tokens, 1.0)
    return distributed_share(total, tokens, tf.cast(tf.shape(labels)[0], tf.float32), context)


def token_loss_sum(labels, logits) -> tuple[tf.Tensor, tf.Tensor]:
    """(summed cross-entropy, count) of the non-padding target tokens."""
    mask = tf.cast(tf.not_equal(labels, 0), tf.float32)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(labels, tf.int32), tf.cast(logits, tf.float32)
    )
    return tf.reduce_sum(losses * mask), tf.reduce_sum(mask)


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
