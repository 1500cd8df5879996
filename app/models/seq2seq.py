"""The functional encoder-decoder model, and its encode/step functions for decoding."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from app.config import ModelConfig
from app.models.decoder import AttentionDecoder
from app.models.encoder import BidirectionalEncoder
from app.models.recurrence import recurrent_cell
from app.models.styles import SourceEncoding, make_style


def build_model(
    source_vocab_size: int,
    target_vocab_size: int,
    *,
    embedding_dim: int = ModelConfig.embedding_dim,
    units: int = ModelConfig.units,
    encoder_units: int | None = ModelConfig.encoder_units,
    dropout: float = ModelConfig.dropout,
    cell: str = ModelConfig.cell,
    **style_settings: Any,
) -> keras.Model:
    """`[source_ids, target_in] → logits`; ids are int32, 0 is padding (masks come from it).
    The keyword arguments are the config's `model` section (`ModelConfig.architecture()`), and so
    are their defaults.

    The variant is decided here, once: `cell` becomes a `RecurrentCell` (`recurrent_cell`) and
    `style_settings` (`attention_style` and the settings styles read: `STYLE_SETTINGS`) become the
    style layer (`make_style`); the encoder and the decoder receive those objects, not names.
    `encoder_units` is the state size of each encoder direction (None: `units`); the annotations
    have twice as many features, so luong's `dot` score needs `encoder_units = units // 2`.
    """
    recurrent = recurrent_cell(cell)
    # === Layers === (in this order: each initialiser draws its seed when it is constructed)
    source_embedding = keras.layers.Embedding(
        source_vocab_size, embedding_dim, mask_zero=True, name="source_embedding"
    )
    target_embedding = keras.layers.Embedding(
        target_vocab_size, embedding_dim, mask_zero=True, name="target_embedding"
    )
    encoder = BidirectionalEncoder(encoder_units or units, units, cell=recurrent, name="encoder")
    decoder_cell = recurrent.step_cell(units, name="cell")
    decoder = AttentionDecoder(
        target_vocab_size, decoder_cell, make_style(units, **style_settings), dropout, name="decoder"
    )
    # === Functional Model ===
    source_ids = keras.Input(shape=(None,), dtype="int32", name="source_ids")
    target_in = keras.Input(shape=(None,), dtype="int32", name="target_in")
    source = keras.layers.Dropout(dropout, name="source_dropout")(source_embedding(source_ids))
    annotations, *initial_state = encoder(source)
    target = keras.layers.Dropout(dropout, name="target_dropout")(target_embedding(target_in))
    logits = decoder(target, annotations, initial_state)
    return keras.Model([source_ids, target_in], logits, name="attend_seq2seq")


class Seq2SeqDecoding:
    """Encode-once and step functions over a trained model's layers, for greedy and beam search.

    The decoding state is a dict: decoder `states` (the cell's, plus h̃_{i-1} for luong with input
    feeding), the encoder tensors the steps read (`annotations`, the attention style's `keys` and
    `values`, both projected once per sentence, and `mask`), so that beam search can tile and drop
    every entry alike, and `attention` (the last step's weights `[batch, src]`) for plots.
    """

    CONSTANT_KEYS = SourceEncoding._fields  # annotations, keys, values, mask: unchanged by `step`

    def __init__(self, model: keras.Model):
        self.source_embedding = model.get_layer("source_embedding")
        self.target_embedding = model.get_layer("target_embedding")
        self.encoder = model.get_layer("encoder")
        self.decoder = model.get_layer("decoder")

    def encode(self, source_ids: tf.Tensor) -> dict:
        """`[batch, src]` int ids (0-padded) → initial decoding state."""
        mask = self.source_embedding.compute_mask(source_ids)  # the same mask training uses
        annotations, *encoder_states = self.encoder(
            self.source_embedding(source_ids), mask=mask, training=False
        )
        states, source = self.decoder.start(annotations, mask, encoder_states)
        return {
            "states": states,
            **source._asdict(),  # annotations [batch, src, 2H], keys, values, mask [batch, src]
            "attention": tf.zeros(tf.shape(source_ids), annotations.dtype),
        }

    def step(self, tokens: tf.Tensor, state: dict) -> tuple[tf.Tensor, dict]:
        """`step_fn(tokens [batch], state) → (logits [batch, vocab], state)` for the search functions."""
        source = SourceEncoding(*(state[key] for key in self.CONSTANT_KEYS))
        logits, states, weights = self.decoder.decode_step(
            self.target_embedding(tokens), state["states"], source
        )
        return tf.cast(logits, tf.float32), {**state, "states": states, "attention": weights}

    def shortlisted_step(self, candidates: tf.Tensor):
        """`step` scoring only the target ids `candidates [C]` (sorted, reserved ids first: see
        `app.models.shortlist`): tokens in and logits `[batch, C]` out are positions in `candidates`.
        The projection's columns are gathered once, here, not at every step."""
        projection = self.decoder.output_projection
        kernel = tf.gather(projection.kernel, candidates, axis=1)  # [readout_size, C]
        bias = tf.gather(projection.bias, candidates)  # [C]

        def step(positions: tf.Tensor, state: dict) -> tuple[tf.Tensor, dict]:
            source = SourceEncoding(*(state[key] for key in self.CONSTANT_KEYS))
            embeddings = self.target_embedding(tf.gather(candidates, positions))
            features, states, weights = self.decoder.decode_features(embeddings, state["states"], source)
            logits = tf.matmul(features, tf.cast(kernel, features.dtype)) + tf.cast(bias, features.dtype)
            return tf.cast(logits, tf.float32), {**state, "states": states, "attention": weights}

        return step
