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
from app.models.tying import TIE_EMBEDDINGS, SharedEmbedding


def build_model(
    source_vocab_size: int,
    target_vocab_size: int,
    *,
    embedding_dim: int = ModelConfig.embedding_dim,
    units: int = ModelConfig.units,
    encoder_units: int | None = ModelConfig.encoder_units,
    dropout: float = ModelConfig.dropout,
    cell: str = ModelConfig.cell,
    tie_embeddings: str = ModelConfig.tie_embeddings,
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

    `tie_embeddings` (`app.models.tying`): `target` makes the output projection's kernel the target
    embedding matrix (the readout must have `embedding_dim` features), `all` also makes the source
    embedding that matrix (one joint vocabulary: the two sizes must be equal).
    """
    recurrent = recurrent_cell(cell)
    _check_tying(tie_embeddings, source_vocab_size, target_vocab_size)
    # === Layers === (in this order: each initialiser draws its seed when it is constructed)
    if tie_embeddings == "all":
        target_embedding = keras.layers.Embedding(
            target_vocab_size, embedding_dim, mask_zero=True, name="target_embedding"
        )
        target_embedding.build()  # the one matrix, named target_embedding/embeddings
        source_embedding = SharedEmbedding(target_embedding, name="source_embedding")
    else:
        source_embedding = keras.layers.Embedding(
            source_vocab_size, embedding_dim, mask_zero=True, name="source_embedding"
        )
        target_embedding = keras.layers.Embedding(
            target_vocab_size, embedding_dim, mask_zero=True, name="target_embedding"
        )
    encoder = BidirectionalEncoder(encoder_units or units, units, cell=recurrent, name="encoder")
    decoder_cell = recurrent.step_cell(units, name="cell")
    style = make_style(units, **style_settings)
    if tie_embeddings != "none" and style.readout_size != embedding_dim:
        raise ValueError(_readout_mismatch(style_settings, style.readout_size, embedding_dim))
    tied = target_embedding if tie_embeddings != "none" else None
    decoder = AttentionDecoder(
        target_vocab_size, decoder_cell, style, dropout, tied_embedding=tied, name="decoder"
    )
    # === Functional Model ===
    source_ids = keras.Input(shape=(None,), dtype="int32", name="source_ids")
    target_in = keras.Input(shape=(None,), dtype="int32", name="target_in")
    source = keras.layers.Dropout(dropout, name="source_dropout")(source_embedding(source_ids))
    annotations, *initial_state = encoder(source)
    target = keras.layers.Dropout(dropout, name="target_dropout")(target_embedding(target_in))
    logits = decoder(target, annotations, initial_state)
    return keras.Model([source_ids, target_in], logits, name="attend_seq2seq")


def _check_tying(tie_embeddings: str, source_vocab_size: int, target_vocab_size: int) -> None:
    if tie_embeddings not in TIE_EMBEDDINGS:
        raise ValueError(f"tie_embeddings={tie_embeddings!r} is not one of {list(TIE_EMBEDDINGS)}")
    if tie_embeddings == "all" and source_vocab_size != target_vocab_size:
        raise ValueError(
            f"tie_embeddings=all shares one embedding matrix between the languages, but the source "
            f"vocabulary has {source_vocab_size} pieces and the target {target_vocab_size}: train one "
            "joint vocabulary (tokenizer.joint=true)"
        )


def _readout_mismatch(style_settings: dict, readout_size: int, embedding_dim: int) -> str:
    """Why the output projection cannot be the embedding matrix transposed, and the settings to align."""
    luong = style_settings.get("attention_style") == "luong"
    setting = "model.units" if luong else "model.readout_units"
    return (
        f"model.tie_embeddings needs the readout's size ({setting}={readout_size}) to equal "
        f"model.embedding_dim={embedding_dim}: the output projection's kernel is the target embedding "
        f"matrix transposed; set {setting}={embedding_dim} (or model.embedding_dim={readout_size}), "
        "or model.tie_embeddings=none"
    )


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
        kernel, bias = self.decoder.projection_columns(candidates)  # [readout_size, C], [C]

        def step(positions: tf.Tensor, state: dict) -> tuple[tf.Tensor, dict]:
            source = SourceEncoding(*(state[key] for key in self.CONSTANT_KEYS))
            embeddings = self.target_embedding(tf.gather(candidates, positions))
            features, states, weights = self.decoder.decode_features(embeddings, state["states"], source)
            logits = tf.matmul(features, tf.cast(kernel, features.dtype)) + tf.cast(bias, features.dtype)
            return tf.cast(logits, tf.float32), {**state, "states": states, "attention": weights}

        return step
