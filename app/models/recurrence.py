"""The recurrent cells a model is built with (GRU, LSTM), one class each, and their steps written over
a Keras cell's own weights with the input projection split off.

A cell is chosen once from the config (`recurrent_cell("lstm")`) and travels as that object: the
encoder asks it for its bidirectional layer and the decoder's initial states, the model builder for
the decoder's step cell, the cost model for its gate count. No other module compares cell names.

A decoder step's input is [E y_{i-1}; c_i]; the embedding half of x·W does not depend on the
recurrence, so it is projected for all target positions in one large matmul before the loop,
and the loop multiplies only c_i and the state. The math is Keras's GRUCell (reset_after=True,
gates z, r, h) and LSTMCell (gates i, f, c, o) exactly; tests hold them equal.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from app.models.precision import weight_as


class RecurrentCell:
    """The interface of a cell kind; each subclass is one kind, with no weights of its own.

    States are lists of `[batch, units]` tensors: `state_count` of them, the hidden state first.
    """

    name: str  # the config's `model.cell`
    gates: int  # gate blocks in the kernels: [dim, gates · units]
    state_count: int
    step_cell_class: type[keras.layers.Layer]  # the Keras cell whose weights `step` reads
    sequence_layer_class: type[keras.layers.Layer]

    def step_cell(self, units: int, **kwargs) -> keras.layers.Layer:
        """The Keras cell a decoder steps (its weights; `step` does the math)."""
        return self.step_cell_class(units, **kwargs)

    def sequence_layer(self, units: int, **kwargs) -> keras.layers.Layer:
        """The Keras layer that runs the cell over a sequence (the encoder's directions)."""
        return self.sequence_layer_class(units, **kwargs)

    def backward_state(self, bidirectional_outputs: list) -> tf.Tensor:
        """The backward direction's hidden state from `Bidirectional(return_state=True)`'s outputs:
        `[sequence, *forward_states, *backward_states]`."""
        return bidirectional_outputs[1 + self.state_count]

    def initial_states(self, hidden: tf.Tensor) -> list:
        """A decoder's first states from its initial hidden state (any memory starts at zero)."""
        return [hidden, *(tf.zeros_like(hidden) for _ in range(self.state_count - 1))]

    def input_bias(self, bias: tf.Tensor) -> tf.Tensor:
        """The part of the cell's bias added to the input projection."""
        return bias

    def step(self, cell: keras.layers.Layer, input_projection: tf.Tensor, states: list) -> list:
        """One step from the projected input (`project_inputs`) → the new states."""
        raise NotImplementedError


class GatedRecurrentUnit(RecurrentCell):
    """GRU (Cho et al. 2014, the paper's): one state; Keras's reset_after form, two bias rows."""

    name, gates, state_count = "gru", 3, 1
    step_cell_class, sequence_layer_class = keras.layers.GRUCell, keras.layers.GRU

    def input_bias(self, bias):
        return bias[0]  # row 1 is the recurrent bias, added inside `step`

    def step(self, cell, input_projection, states):
        hidden = states[0]
        recurrent = tf.matmul(hidden, weight_as(cell.recurrent_kernel, hidden.dtype))
        recurrent += weight_as(cell.bias, hidden.dtype)[1]
        input_z, input_r, input_h = tf.split(input_projection, 3, axis=-1)
        recurrent_z, recurrent_r, recurrent_h = tf.split(recurrent, 3, axis=-1)
        update = tf.sigmoid(input_z + recurrent_z)
        reset = tf.sigmoid(input_r + recurrent_r)
        candidate = tf.tanh(input_h + reset * recurrent_h)
        return [update * hidden + (1 - update) * candidate]


class LongShortTermMemory(RecurrentCell):
    """LSTM: states [h, memory]; a decoder's memory starts at zero."""

    name, gates, state_count = "lstm", 4, 2
    step_cell_class, sequence_layer_class = keras.layers.LSTMCell, keras.layers.LSTM

    def step(self, cell, input_projection, states):
        hidden = states[0]
        gates = input_projection + tf.matmul(hidden, weight_as(cell.recurrent_kernel, hidden.dtype))
        input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=-1)
        memory = tf.sigmoid(forget_gate) * states[1] + tf.sigmoid(input_gate) * tf.tanh(candidate)
        return [tf.sigmoid(output_gate) * tf.tanh(memory), memory]


RECURRENT_CELLS: dict[str, RecurrentCell] = {
    kind.name: kind for kind in (GatedRecurrentUnit(), LongShortTermMemory())
}


def recurrent_cell(name: str) -> RecurrentCell:
    """The cell kind the config names (`model.cell`); an unknown name is refused with the choices."""
    if name not in RECURRENT_CELLS:
        raise ValueError(f"cell={name!r} is not one of {list(RECURRENT_CELLS)}")
    return RECURRENT_CELLS[name]


def kind_of(cell: keras.layers.Layer) -> RecurrentCell:
    """The kind of a Keras step cell (the decoder's `cell`), so that the steps need only the cell."""
    for kind in RECURRENT_CELLS.values():
        if isinstance(cell, kind.step_cell_class):
            return kind
    raise ValueError(f"{type(cell).__name__} is not the step cell of any of {list(RECURRENT_CELLS)}")


def project_inputs(
    cell: keras.layers.Layer, inputs: tf.Tensor, first: int, count: int | None = None, with_bias: bool = True
) -> tf.Tensor:
    """inputs · kernel[first:first + count] (+ the input bias): `[…, dim]` → `[…, gates · units]`."""
    kernel = weight_as(cell.kernel, inputs.dtype)[first : None if count is None else first + count]
    projected = tf.tensordot(inputs, kernel, axes=1) if inputs.shape.rank > 2 else tf.matmul(inputs, kernel)
    if not with_bias:
        return projected
    return projected + kind_of(cell).input_bias(weight_as(cell.bias, inputs.dtype))


def recurrent_step(cell: keras.layers.Layer, input_projection: tf.Tensor, states: list) -> list:
    """One step from the projected input: GRU → [h], LSTM → [h, c]."""
    return kind_of(cell).step(cell, input_projection, states)
