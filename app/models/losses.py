"""Masked token-level loss and accuracy: label 0 is padding and counts for nothing."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="attend")
def masked_cross_entropy(labels, logits):
    """Mean cross-entropy over the non-padding target tokens of the batch."""
    mask = tf.cast(tf.not_equal(labels, 0), tf.float32)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(labels, tf.int32), tf.cast(logits, tf.float32)
    )
    return tf.reduce_sum(losses * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="attend")
class MaskedTokenAccuracy(keras.metrics.Metric):
    """Share of non-padding target tokens predicted exactly, pooled over all tokens seen
    (not a mean of per-batch means, which would over-weight short batches)."""

    def __init__(self, name="token_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, labels, logits, sample_weight=None):
        labels = tf.cast(labels, tf.int32)
        mask = tf.not_equal(labels, 0)
        hits = tf.logical_and(mask, tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels))
        self.correct.assign_add(tf.reduce_sum(tf.cast(hits, tf.float32)))
        self.total.assign_add(tf.reduce_sum(tf.cast(mask, tf.float32)))

    def result(self):
        return tf.math.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)
