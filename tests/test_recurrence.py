"""The decoder's split-projection GRU/LSTM steps equal Keras's own cells."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.models.recurrence import project_inputs, recurrent_step


@pytest.mark.parametrize("cell_class", [keras.layers.GRUCell, keras.layers.LSTMCell])
def test_split_projection_step_equals_the_keras_cell(cell_class):
    cell = cell_class(5)
    cell.build((None, 7))
    rng = np.random.default_rng(0)
    for weight in cell.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32") * 0.5)
    inputs = tf.constant(rng.normal(size=(3, 7)), tf.float32)
    states = (
        [tf.constant(rng.normal(size=(3, 5)), tf.float32) for _ in cell.state_size]
        if isinstance(cell.state_size, (list, tuple))
        else [tf.constant(rng.normal(size=(3, 5)), tf.float32)]
    )
    _, expected = cell(inputs, states)
    # first 4 input features projected "before the loop", the other 3 inside it
    projection = project_inputs(cell, inputs[:, :4], 0, 4) + project_inputs(
        cell, inputs[:, 4:], 4, with_bias=False
    )
    for got, want in zip(recurrent_step(cell, projection, states), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
