"""Mixed precision outside Keras's autocasting: steps called directly (decoding) read float32
variables and must cast them to the compute dtype of their inputs themselves."""

from __future__ import annotations

import tensorflow as tf


def weight_as(variable, dtype) -> tf.Tensor:
    return tf.cast(variable, dtype)
