"""Bidirectional recurrent encoder producing the annotations h_j = [forward_j; backward_j]."""

from __future__ import annotations

import keras
import tensorflow as tf


def make_recurrent_layer(cell: str, units: int, **kwargs) -> keras.layers.Layer:
    if cell == "gru":
        return keras.layers.GRU(units, **kwargs)
    if cell == "lstm":
        return keras.layers.LSTM(units, **kwargs)
    raise ValueError(f"cell={cell!r} is not one of ['gru', 'lstm']")


@keras.saving.register_keras_serializable(package="attend")
class BidirectionalEncoder(keras.layers.Layer):
    """Bidirectional GRU/LSTM over embedded source tokens, plus the decoder's initial state.

    The initial decoder state is the paper's s_0 = tanh(W_s · backward_h_1): the backward
    RNN's state after reading the whole sentence right to left. Padding is skipped by the
    recurrent layers (the embedding's mask), so a sentence encodes the same alone or padded.

    Args:
        units: state size of each direction; the annotations have `2 * units` features.
        decoder_units: size of the decoder state that s_0 initialises.
        cell: `"gru"` or `"lstm"` (an LSTM decoder starts with a zero memory cell).

    Call arguments:
        embedded: `[batch, src, embedding_dim]` with the embedding's mask attached.

    Returns:
        `[annotations, *initial_states]`: `[batch, src, 2 * units]` (masked like the input)
        and one (GRU) or two (LSTM: h, c) `[batch, decoder_units]` tensors.
    """

    def __init__(self, units: int, decoder_units: int, cell: str = "gru", **kwargs):
        super().__init__(**kwargs)
        self.units, self.decoder_units, self.cell = units, decoder_units, cell
        recurrent = make_recurrent_layer(cell, units, return_sequences=True, return_state=True)
        self.bidirectional = keras.layers.Bidirectional(recurrent, name="bidirectional")
        self.bridge = keras.layers.Dense(decoder_units, activation="tanh", name="bridge")  # W_s

    def build(self, embedded_shape):
        self.bidirectional.build(embedded_shape)
        self.bridge.build((None, self.units))

    def call(self, embedded, mask=None, training=None):
        outputs = self.bidirectional(embedded, mask=mask, training=training)
        annotations = outputs[0]  # [batch, src, 2 * units]
        # GRU: [seq, forward_h, backward_h]; LSTM: [seq, forward_h, forward_c, backward_h, backward_c]
        backward_h = outputs[2] if self.cell == "gru" else outputs[3]
        initial_state = self.bridge(backward_h)  # [batch, decoder_units]
        if self.cell == "lstm":
            return [annotations, initial_state, tf.zeros_like(initial_state)]
        return [annotations, initial_state]

    def compute_mask(self, embedded, mask=None):
        return [mask, None] if self.cell == "gru" else [mask, None, None]

    def compute_output_shape(self, embedded_shape):
        state = (embedded_shape[0], self.decoder_units)
        annotations = (*embedded_shape[:2], 2 * self.units)
        return [annotations, state] if self.cell == "gru" else [annotations, state, state]

    def get_config(self):
        config = {"units": self.units, "decoder_units": self.decoder_units, "cell": self.cell}
        return {**super().get_config(), **config}
