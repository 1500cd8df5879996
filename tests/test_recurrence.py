"""The decoder's split-projection GRU/LSTM steps equal Keras's own cells."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.models.recurrence import kind_of, project_inputs, recurrent_cell, recurrent_step


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


@pytest.mark.parametrize(
    ("name", "keras_cell", "gates"), [("gru", keras.layers.GRUCell, 3), ("lstm", keras.layers.LSTMCell, 4)]
)
def test_a_cell_kind_describes_the_keras_cell_it_makes(name, keras_cell, gates):
    """The kind chosen by name makes the Keras cell and layer, and its gate and state counts are theirs
    (the cost model counts with them; the encoder returns that many initial states)."""
    kind = recurrent_cell(name)
    cell = kind.step_cell(5)
    cell.build((None, 7))
    assert type(cell) is keras_cell and kind_of(cell) is kind
    assert kind.gates == gates and cell.kernel.shape == (7, gates * 5)
    assert kind.state_count == len(tf.nest.flatten(cell.state_size))
    assert type(kind.sequence_layer(5)) is {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[name]
    initial = kind.initial_states(tf.ones([2, 5]))
    assert len(initial) == kind.state_count and float(tf.reduce_sum(initial[0])) == 10.0
    assert all(
        float(tf.reduce_sum(memory)) == 0.0 for memory in initial[1:]
    )  # an LSTM's memory starts at zero


def test_an_unknown_cell_is_refused_with_the_choices():
    with pytest.raises(ValueError) as refused:
        recurrent_cell("rnn")
    assert str(refused.value) == "cell='rnn' is not one of ['gru', 'lstm']"
    with pytest.raises(ValueError, match="SimpleRNNCell is not the step cell of any of"):
        recurrent_step(keras.layers.SimpleRNNCell(3), tf.zeros([1, 3]), [tf.zeros([1, 3])])
