"""GRU/LSTM steps written over a Keras cell's own weights, with the input projection split off.

A decoder step's input is [E y_{i-1}; c_i]; the embedding half of x·W does not depend on the
recurrence, so it is projected for all target positions in one large matmul before the loop,
and the loop multiplies only c_i and the state. The math is Keras's GRUCell (reset_after=True,
gates z, r, h) and LSTMCell (gates i, f, c, o) exactly; tests hold them equal.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from app.models.precision import weight_as


def project_inputs(
    cell: keras.layers.Layer, inputs: tf.Tensor, first: int, count: int | None = None, with_bias: bool = True
) -> tf.Tensor:
    """inputs · kernel[first:first + count] (+ the input bias): `[…, dim]` → `[…, gates · units]`."""
    kernel = weight_as(cell.kernel, inputs.dtype)[first : None if count is None else first + count]
    projected = tf.tensordot(inputs, kernel, axes=1) if inputs.shape.rank > 2 else tf.matmul(inputs, kernel)
    if not with_bias:
        return projected
    bias = weight_as(cell.bias, inputs.dtype)
    return projected + (bias[0] if isinstance(cell, keras.layers.GRUCell) else bias)


def recurrent_step(cell: keras.layers.Layer, input_projection: tf.Tensor, states: list) -> list:
    """One step from the projected input: GRU → [h], LSTM → [h, c]."""
    hidden = states[0]
    recurrent = tf.matmul(hidden, weight_as(cell.recurrent_kernel, hidden.dtype))
    if isinstance(cell, keras.layers.GRUCell):
        recurrent += weight_as(cell.bias, hidden.dtype)[1]
        input_z, input_r, input_h = tf.split(input_projection, 3, axis=-1)
        recurrent_z, recurrent_r, recurrent_h = tf.split(recurrent, 3, axis=-1)
        update = tf.sigmoid(input_z + recurrent_z)
        reset = tf.sigmoid(input_r + recurrent_r)
        candidate = tf.tanh(input_h + reset * recurrent_h)
        return [update * hidden + (1 - update) * candidate]
    gates = input_projection + recurrent
    input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=-1)
    memory = tf.sigmoid(forget_gate) * states[1] + tf.sigmoid(input_gate) * tf.tanh(candidate)
    return [tf.sigmoid(output_gate) * tf.tanh(memory), memory]
