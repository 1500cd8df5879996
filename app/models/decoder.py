"""Attention decoder: one step function shared by teacher-forced training and in-graph decoding."""

from __future__ import annotations

import keras
import tensorflow as tf

from app.models.attention import AdditiveAttention
from app.models.recurrence import project_inputs, recurrent_step

ATTENTION_STYLES = ("bahdanau", "luong", "none")


def make_cell(cell: str, units: int) -> keras.layers.Layer:
    if cell == "gru":
        return keras.layers.GRUCell(units, name="cell")
    if cell == "lstm":
        return keras.layers.LSTMCell(units, name="cell")
    raise ValueError(f"cell={cell!r} is not one of ['gru', 'lstm']")


@keras.saving.register_keras_serializable(package="attend")
class AttentionDecoder(keras.layers.Layer):
    """Recurrent decoder with additive attention and a deep (maxout) output.

    `attention_style="bahdanau"` is the paper: each step attends with the previous state
    s_{i-1}, feeds [E y_{i-1}; c_i] into the cell and reads out from [s_i; c_i; E y_{i-1}].
    Keras 3's RNN layer takes no `constants`, so this layer runs its own `tf.scan` over the
    target positions (XLA-compilable; the attention and cell work on 2-D tensors inside it).
    `"luong"` runs the cell over all positions first and attends from s_i afterwards, all at
    once — faster to train, the TensorFlow tutorial's shape. Inside the loop a bahdanau step
    computes only the attention weights and Σ_j α_ij W_c h_j (`project_values`); the contexts
    c_i the readout needs are one batched product after the loop. Both read out the same way.
    `"none"` is the paper's RNNencdec baseline: no attention, every step gets the same context
    c = [forward h_T; backward h_1], the encoder's summary of the whole sentence.

    Args:
        vocab_size: target vocabulary size (logits per position).
        units: decoder state size.
        attention_units: attention hidden size.
        readout_units: deep output size; `maxout_pieces` > 1 takes the max over that many
            linear pieces per unit (the paper's maxout), 1 uses tanh.
        cell: `"gru"` or `"lstm"`.
        attention_style: `"bahdanau"` or `"luong"`.
        dropout: dropout before the output projection.

    Call arguments:
        target_embeddings: `[batch, tgt, embedding_dim]` of the decoder inputs (start + target[:-1]).
        annotations: `[batch, src, 2 * encoder_units]`; its mask (False at padding) arrives as
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention_style not in ATTENTION_STYLES:
            raise ValueError(f"attention_style={attention_style!r} is not one of {list(ATTENTION_STYLES)}")
        self.vocab_size, self.units, self.attention_units = vocab_size, units, attention_units
        self.readout_units, self.maxout_pieces, self.cell_type = readout_units, maxout_pieces, cell
        self.attention_style, self.dropout = attention_style, dropout
        # === Layers ===
        self.attention = AdditiveAttention(attention_units, name="attention")
        self.cell = make_cell(cell, units)
        self.deep_output = keras.layers.Dense(readout_units * maxout_pieces, name="deep_output")
        self.readout_dropout = keras.layers.Dropout(dropout, name="readout_dropout")
        self.output_projection = keras.layers.Dense(vocab_size, name="output_projection")

    def build(self, target_embeddings_shape, annotations_shape, initial_state_shape=None):
        embedding_dim, annotation_dim = target_embeddings_shape[-1], annotations_shape[-1]
        self.embedding_rows = embedding_dim
        context_in_cell = self.attention_style in ("bahdanau", "none")
        self.cell.build((None, embedding_dim + annotation_dim if context_in_cell else embedding_dim))
        if self.attention_style != "none":
            self.attention.build_for_values(self.units, annotation_dim)
        self.deep_output.build((None, self.units + annotation_dim + embedding_dim))
        self.output_projection.build((None, self.readout_units))

    def project_keys(self, annotations):
        """U_a h_j for all source positions, once per sentence (empty `[batch, src, 0]` without attention)."""
        if self.attention_style == "none":
            return annotations[:, :, :0]
        return self.attention.project_keys(annotations)

    @staticmethod
    def sentence_context(annotations, source_mask):
        """RNNencdec's fixed context: [forward state at the last real token; backward state at the first]."""
        half = annotations.shape[-1] // 2
        last = tf.reduce_sum(tf.cast(source_mask, tf.int32), axis=1) - 1  # [batch]
        forward_last = tf.gather(annotations[:, :, :half], tf.maximum(last, 0), batch_dims=1)
        return tf.concat([forward_last, annotations[:, 0, half:]], axis=-1)  # [batch, 2H]

    # === The step, shared by training and decoding ===
    def embed_inputs(self, embeddings):
        """E y · W_e + b, the embedding's share of the cell input, for one or all positions at once."""
        return project_inputs(self.cell, embeddings, 0, embeddings.shape[-1])

    def project_values(self, annotations):
        """W_c h_j: every annotation through the cell-input kernel's context rows, once per sentence
        (`[batch, src, gates·units]`; empty unless bahdanau). W_c c_i = Σ_j α_ij W_c h_j, so a step
        needs a weighted sum over the source, not a [2H × gates·units] matmul of its context."""
        if self.attention_style != "bahdanau":
            return annotations[:, :, :0]
        return project_inputs(self.cell, annotations, self.embedding_rows, with_bias=False)

    def recur(self, embedding_projection, states, projected_keys, projected_values, annotations, source_mask):
        """The recurrence of one step from `embed_inputs(E y_{i-1})` → (new states, the attention
        `[batch, src]` the cell input was built with; None for luong, which attends afterwards)."""
        if self.attention_style == "luong":
            return recurrent_step(self.cell, embedding_projection, states), None
        if self.attention_style == "bahdanau":  # e_ij from s_{i-1}; c_i enters the recurrence
            weights = self.attention.attention_weights(states[0], projected_keys, source_mask)
            context_projection = self.attention.weighted_sum(weights, projected_values)
        else:  # RNNencdec: the same summary of the sentence at every step, nothing attended
            context = self.sentence_context(annotations, source_mask)
            context_projection = project_inputs(self.cell, context, self.embedding_rows, with_bias=False)
            weights = tf.zeros(tf.shape(source_mask), embedding_projection.dtype)
        return recurrent_step(self.cell, embedding_projection + context_projection, states), weights

    def step(self, embedding_projection, states, projected_keys, projected_values, annotations, source_mask):
        """One decoder step → (new states, context `[batch, 2H]`, attention `[batch, src]`)."""
        new_states, weights = self.recur(
            embedding_projection, states, projected_keys, projected_values, annotations, source_mask
        )
        if self.attention_style == "luong":
            context, weights = self.attention(new_states[0], projected_keys, annotations, source_mask)
        elif self.attention_style == "bahdanau":
            context = self.attention.weighted_sum(weights, annotations)
        else:
            context = self.sentence_context(annotations, source_mask)
        return new_states, context, weights

    def readout(self, state, context, previous_embedding, training=None):
        """Logits from [s_i; c_i; E y_{i-1}]; works on `[batch, …]` and `[batch, tgt, …]` alike."""
        hidden = self.deep_output(tf.concat([state, context, previous_embedding], axis=-1))
        if self.maxout_pieces > 1:
            pieces = tf.reshape(
                hidden, tf.concat([tf.shape(hidden)[:-1], [self.readout_units, self.maxout_pieces]], 0)
            )
            hidden = tf.reduce_max(pieces, axis=-1)
        else:
            hidden = tf.tanh(hidden)
        return self.output_projection(self.readout_dropout(hidden, training=training))

    def decode_step(
        self, previous_embedding, states, projected_keys, projected_values, annotations, source_mask
    ):
        """Inference step: (logits `[batch, vocab]`, new states, attention `[batch, src]`)."""
        new_states, context, weights = self.step(
            self.embed_inputs(previous_embedding),
            states,
            projected_keys,
            projected_values,
            annotations,
            source_mask,
        )
        return self.readout(new_states[0], context, previous_embedding, training=False), new_states, weights

    # === Teacher forcing over all target positions ===
    def call(self, target_embeddings, annotations, initial_state, annotations_mask=None, training=None):
        decoder_states, contexts = self.run_recurrence(
            self.embed_inputs(target_embeddings), list(initial_state), annotations, annotations_mask
        )
        return self.readout(decoder_states, contexts, target_embeddings, training=training)

    def run_recurrence(self, embedding_projections, states, annotations, source_mask):
        """All target positions from `embed_inputs` of the decoder inputs (one matmul for all steps)
        → (decoder states `[batch, tgt, units]`, contexts `[batch, tgt, 2H]`)."""
        projected_keys = self.project_keys(annotations)  # once per sentence: [batch, src, A]
        if self.attention_style == "luong":  # the cell alone in the loop, attention over all states after it
            all_states = tf.scan(
                lambda carry, projection: recurrent_step(self.cell, projection, carry),
                tf.transpose(embedding_projections, [1, 0, 2]),
                initializer=states,
            )
            decoder_states = tf.transpose(all_states[0], [1, 0, 2])  # [batch, tgt, units]
            contexts, _ = self.attention(decoder_states, projected_keys, annotations, source_mask)
            return decoder_states, contexts
        projected_values = self.project_values(annotations)

        def one_step(carry, embedding_projection):
            return self.recur(
                embedding_projection, carry[0], projected_keys, projected_values, annotations, source_mask
            )

        time_major = tf.transpose(embedding_projections, [1, 0, 2])  # [tgt, batch, gates·units]
        weights0 = tf.zeros(tf.shape(annotations)[:2], embedding_projections.dtype)  # [batch, src]
        all_states, all_weights = tf.scan(one_step, time_major, initializer=(states, weights0))
        decoder_states = tf.transpose(all_states[0], [1, 0, 2])  # [tgt, batch, units] -> [batch, tgt, units]
        if self.attention_style == "bahdanau":  # the contexts of all steps in one batched product
            return decoder_states, self.attention.weighted_sum(
                tf.transpose(all_weights, [1, 0, 2]), annotations
            )
        context = self.sentence_context(annotations, source_mask)[:, None, :]  # RNNencdec: one per sentence
        return decoder_states, tf.broadcast_to(
            context, tf.concat([tf.shape(decoder_states)[:2], tf.shape(context)[2:]], 0)
        )

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
        }
        return {**super().get_config(), **config}
