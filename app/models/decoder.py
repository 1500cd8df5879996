"""Attention decoder: one step function shared by teacher-forced training and in-graph decoding."""

from __future__ import annotations

import keras

from app.models.recurrence import project_inputs
from app.models.styles import SourceEncoding, make_style


def make_cell(cell: str, units: int) -> keras.layers.Layer:
    if cell == "gru":
        return keras.layers.GRUCell(units, name="cell")
    if cell == "lstm":
        return keras.layers.LSTMCell(units, name="cell")
    raise ValueError(f"cell={cell!r} is not one of ['gru', 'lstm']")


@keras.saving.register_keras_serializable(package="attend")
class AttentionDecoder(keras.layers.Layer):
    """Recurrent decoder whose attention style is a setting: the paper's by default.

    The decoder owns the recurrent cell and the vocabulary projection; everything that differs
    between attention styles (their weights, what is projected once per sentence, the step, the
    teacher-forced run, what the output layer reads) lives in one style class, picked by name
    (`app.models.styles.ATTENTION_STYLES`):

    - `"bahdanau"`: the paper. Attend from s_{i-1}, feed [E y_{i-1}; c_i] into the cell, read out
      from [s_i; c_i; E y_{i-1}] through a deep (maxout) output.
    - `"additive_after"`: the same score and readout, but the cell runs first and attention reads
      s_i after it (the TensorFlow tutorial's shape; faster to train).
    - `"luong"`: Luong et al. (2015) global attention, `general` or `dot` score, the attentional
      state h̃_i = tanh(W_c [c_i; s_i]) feeds the output layer; optional input feeding.
    - `"none"`: the paper's RNNencdec baseline, one fixed summary of the sentence at every step.

    Keras 3's RNN layer takes no `constants`, so the styles run their own `tf.scan` over the
    target positions (XLA-compilable; attention and cell work on 2-D tensors inside it). The
    embedding's share of the cell input is projected for all positions in one matmul before the
    loop (`embed_inputs`).

    Args:
        vocab_size: target vocabulary size (logits per position).
        units: decoder state size.
        attention_units: additive attention hidden size (bahdanau, additive_after).
        readout_units: deep output size; `maxout_pieces` > 1 takes the max over that many linear
            pieces per unit (the paper's maxout), 1 uses tanh. Not used by luong, whose output
            layer reads h̃_i directly.
        cell: `"gru"` or `"lstm"`.
        attention_style: a name in `ATTENTION_STYLES`.
        dropout: dropout before the output projection.
        luong_score: `"general"` (s_i^T W_a h_j) or `"dot"` (s_i · h_j: the annotations must have
            `units` features). Luong only.
        input_feeding: feed h̃_{i-1} into the next step's cell input. Luong only.

    Call arguments:
        target_embeddings: `[batch, tgt, embedding_dim]` of the decoder inputs (start + target[:-1]).
        annotations: `[batch, src, annotation_dim]`; its mask (False at padding) arrives as
            `annotations_mask` from the encoder automatically.
        initial_state: list of `[batch, units]` tensors (one for GRU, h and c for LSTM).

    Returns:
        logits `[batch, tgt, vocab_size]`, without a mask: the loss masks padding from the labels.
    """

    def __init__(
        self,
        vocab_size: int,
        units: int,
        attention_units: int,
        readout_units: int,
        maxout_pieces: int = 2,
        cell: str = "gru",
        attention_style: str = "bahdanau",
        dropout: float = 0.0,
        luong_score: str = "general",
        input_feeding: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size, self.units, self.attention_units = vocab_size, units, attention_units
        self.readout_units, self.maxout_pieces, self.cell_type = readout_units, maxout_pieces, cell
        self.attention_style, self.dropout = attention_style, dropout
        self.luong_score, self.input_feeding = luong_score, input_feeding
        # === Layers === (the cell first: initialisers draw their seeds when constructed)
        self.cell = make_cell(cell, units)
        self.style = make_style(
            attention_style,
            units=units,
            attention_units=attention_units,
            readout_units=readout_units,
            maxout_pieces=maxout_pieces,
            luong_score=luong_score,
            input_feeding=input_feeding,
            name=attention_style,
        )
        self.readout_dropout = keras.layers.Dropout(dropout, name="readout_dropout")
        self.output_projection = keras.layers.Dense(vocab_size, name="output_projection")

    def build(self, target_embeddings_shape, annotations_shape, initial_state_shape=None):
        embedding_dim, annotation_dim = target_embeddings_shape[-1], annotations_shape[-1]
        self.embedding_rows = embedding_dim
        self.cell.build((None, self.style.cell_input_size(embedding_dim, annotation_dim)))
        self.style.build_for(embedding_dim, annotation_dim)
        self.output_projection.build((None, self.style.readout_size))

    # === Shared by training and decoding ===
    def start(self, annotations, source_mask, encoder_states: list) -> tuple[list, SourceEncoding]:
        """The states before the first step and the source projected once per sentence."""
        return self.style.initial_states(encoder_states), self.style.project_source(
            self.cell, annotations, source_mask
        )

    def embed_inputs(self, embeddings):
        """E y · W_e + b, the embedding's share of the cell input, for one or all positions at once."""
        return project_inputs(self.cell, embeddings, 0, embeddings.shape[-1])

    def readout(self, readout_inputs, training=None):
        """Logits from the style's readout inputs; works on `[batch, …]` and `[batch, tgt, …]` alike."""
        features = self.style.readout_features(readout_inputs)
        return self.output_projection(self.readout_dropout(features, training=training))

    def decode_step(self, previous_embedding, states, source: SourceEncoding):
        """Inference step from E y_{i-1} `[batch, embedding_dim]`: (logits `[batch, vocab]`, new states,
        attention `[batch, src]`)."""
        features, new_states, weights = self.decode_features(previous_embedding, states, source)
        return self.output_projection(features), new_states, weights

    def decode_features(self, previous_embedding, states, source: SourceEncoding):
        """`decode_step` up to the vocabulary projection: (its input features `[batch, readout_size]`,
        new states, attention), for a search that projects onto part of the vocabulary."""
        new_states, readout_inputs, weights = self.style.step(
            self.cell, self.embed_inputs(previous_embedding), previous_embedding, states, source
        )
        return self.style.readout_features(readout_inputs), new_states, weights

    # === Teacher forcing over all target positions ===
    def run_recurrence(self, target_embeddings, states, source: SourceEncoding):
        """All target positions of the decoder inputs → readout inputs `[batch, tgt, …]`."""
        return self.style.run(
            self.cell, self.embed_inputs(target_embeddings), target_embeddings, states, source
        )

    def call(self, target_embeddings, annotations, initial_state, annotations_mask=None, training=None):
        states, source = self.start(annotations, annotations_mask, list(initial_state))
        return self.readout(self.run_recurrence(target_embeddings, states, source), training=training)

    def compute_mask(self, target_embeddings, mask=None):
        return None

    def compute_output_shape(self, target_embeddings_shape, annotations_shape, initial_state_shape=None):
        return (*target_embeddings_shape[:2], self.vocab_size)

    def get_config(self):
        config = {
            "vocab_size": self.vocab_size,
            "units": self.units,
            "attention_units": self.attention_units,
            "readout_units": self.readout_units,
            "maxout_pieces": self.maxout_pieces,
            "cell": self.cell_type,
            "attention_style": self.attention_style,
            "dropout": self.dropout,
            "luong_score": self.luong_score,
            "input_feeding": self.input_feeding,
        }
        return {**super().get_config(), **config}
