"""Bidirectional recurrent encoder producing the annotations h_j = [forward_j; backward_j]."""

from __future__ import annotations

import keras

from app.models.recurrence import RecurrentCell, recurrent_cell


@keras.saving.register_keras_serializable(package="attend")
class BidirectionalEncoder(keras.layers.Layer):
    """Bidirectional GRU/LSTM over embedded source tokens, plus the decoder's initial state.

    The initial decoder state is the paper's s_0 = tanh(W_s · backward_h_1): the backward
    RNN's state after reading the whole sentence right to left. Padding is skipped by the
    recurrent layers (the embedding's mask), so a sentence encodes the same alone or padded.

    Args:
        units: state size of each direction; the annotations have `2 * units` features.
        decoder_units: size of the decoder state that s_0 initialises.
        cell: the cell kind (`app.models.recurrence.recurrent_cell`); an LSTM decoder starts with a
            zero memory cell. The config stores its name.

    Call arguments:
        embedded: `[batch, src, embedding_dim]` with the embedding's mask attached.

    Returns:
        `[annotations, *initial_states]`: `[batch, src, 2 * units]` (masked like the input)
        and one (GRU) or two (LSTM: h, c) `[batch, decoder_units]` tensors.
    """

    def __init__(self, units: int, decoder_units: int, cell: RecurrentCell, **kwargs):
        super().__init__(**kwargs)
        self.units, self.decoder_units, self.cell = units, decoder_units, cell
        recurrent = cell.sequence_layer(units, return_sequences=True, return_state=True)
        self.bidirectional = keras.layers.Bidirectional(recurrent, name="bidirectional")
        self.bridge = keras.layers.Dense(decoder_units, activation="tanh", name="bridge")  # W_s

    def build(self, embedded_shape):
        self.bidirectional.build(embedded_shape)
        self.bridge.build((None, self.units))

    def call(self, embedded, mask=None, training=None):
        outputs = self.bidirectional(embedded, mask=mask, training=training)
        annotations = outputs[0]  # [batch, src, 2 * units]
        initial_state = self.bridge(self.cell.backward_state(outputs))  # [batch, decoder_units]
        return [annotations, *self.cell.initial_states(initial_state)]

    def compute_mask(self, embedded, mask=None):
        return [mask] + [None] * self.cell.state_count

    def compute_output_shape(self, embedded_shape):
        state = (embedded_shape[0], self.decoder_units)
        annotations = (*embedded_shape[:2], 2 * self.units)
        return [annotations] + [state] * self.cell.state_count

    def get_config(self):
        config = {"units": self.units, "decoder_units": self.decoder_units, "cell": self.cell.name}
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "cell": recurrent_cell(config["cell"])})
