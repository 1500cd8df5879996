"""Attention styles of the decoder: one class per variant behind one interface, picked once.

`make_style` turns the config's model section into the style object (the only place that reads
`model.attention_style` and the settings only one style uses, such as luong's `input_feeding`);
the model builder hands that object to the decoder, and the cost model asks it for its FLOPs.

A style decides what a decoder step does around its recurrent cell: what it projects once per
sentence, what the cell reads, where attention sits (before the cell, after it, or nowhere), what
the output layer reads, and what all of that costs in FLOPs. `AttentionDecoder` owns the cell and
the vocabulary projection and delegates the rest to its style, so adding a variant is one class
here and one registry entry, with no `if style == …` elsewhere.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
import tensorflow as tf

from app.config import ModelConfig
from app.models.attention import LUONG_SCORES, AdditiveAttention, LuongAttention, weighted_sum
from app.models.recurrence import project_inputs, recurrent_step


class SourceEncoding(NamedTuple):
    """What every decoder step reads from the source; computed once per sentence (`project_source`).

    Beam search tiles these once and never reorders them. `keys` and `values` are the style's own
    projections (each style's docstring says what they hold); a style that needs none leaves them
    empty.
    """

    annotations: tf.Tensor  # h_j, [batch, src, dim]
    keys: tf.Tensor  # [batch, src, …] (or [batch, …] for a per-sentence summary)
    values: tf.Tensor  # [batch, src, …]
    mask: tf.Tensor | None  # bool [batch, src], False at padding


class DecoderStyle(keras.layers.Layer):
    """The interface `AttentionDecoder` delegates to; each subclass is one attention style.

    A style owns its own weights (attention, readout layers) and receives the decoder's recurrent
    cell as an argument: the cell's input size depends on the style, its step does not.

    States: a list of `[batch, units]` tensors, the cell's (GRU: [s]; LSTM: [s, memory]) followed
    by any the style carries from step to step (`initial_states`).
    Readout inputs: what the output layer reads, `[batch, (tgt,) …]`; `readout_features` maps them
    to `readout_size` features for the vocabulary projection.

    Args:
        units: decoder state size.
    """

    own_settings: tuple[str, ...] = ()  # settings no other style reads: refused with another style

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    @classmethod
    def from_settings(cls, units: int, settings: dict[str, Any], **kwargs) -> DecoderStyle:
        """The style from the model section's settings (`STYLE_SETTINGS`); each takes what it uses."""
        raise NotImplementedError

    # === Weights ===
    def cell_input_size(self, embedding_dim: int, annotation_dim: int) -> int:
        """Features of the cell input x_i; the first `embedding_dim` are E y_{i-1}."""
        raise NotImplementedError

    def build_for(self, embedding_dim: int, annotation_dim: int) -> None:
        """Creates the style's weights from the sizes it is used with (the decoder's `build`)."""
        self.embedding_dim = embedding_dim
        self.built = True

    @property
    def readout_size(self) -> int:
        """Features `readout_features` gives the vocabulary projection."""
        raise NotImplementedError

    # === Decoding ===
    def initial_states(self, cell_states: list) -> list:
        """The decoder states before the first step, from the encoder's initial cell states."""
        return list(cell_states)

    def project_source(self, cell, annotations, mask) -> SourceEncoding:
        """What the steps read from the source, projected once per sentence."""
        raise NotImplementedError

    def step(self, cell, embedding_projection, embedding, states, source: SourceEncoding):
        """One target position → (new states, readout inputs `[batch, …]`, attention `[batch, src]`).

        `embedding_projection` is E y_{i-1} through the cell's embedding rows plus its bias
        (`AttentionDecoder.embed_inputs`); `embedding` is E y_{i-1} itself.
        """
        raise NotImplementedError

    def run(self, cell, embedding_projections, embeddings, states, source: SourceEncoding):
        """Teacher forcing: all target positions at once → readout inputs `[batch, tgt, …]`,
        equal position by position to what `step` gives."""
        raise NotImplementedError

    def readout_features(self, readout_inputs):
        """The features the vocabulary projection reads, `[batch, (tgt,) readout_size]`."""
        return readout_inputs

    # === Cost: multiply-adds of the model's math as written (2 FLOP each), per token ===
    def source_multiply_adds(self, annotation_dim: int) -> float:
        """Per source token: what the style projects once per sentence."""
        return 0

    def target_multiply_adds(self, embedding_dim: int, annotation_dim: int, source_tokens: float) -> float:
        """Per target token: attention and readout features (the cell and the vocabulary
        projection are counted by the caller from `cell_input_size` and `readout_size`)."""
        raise NotImplementedError

    # === Helpers shared by the styles ===
    def project_cell_inputs(self, cell, features):
        """What joins E y_{i-1} in the cell input (c_i, or h̃_{i-1}) through the cell kernel's rows
        after the embedding's, without bias: W_c c for `[…, dim]` features → `[…, gates·units]`."""
        return project_inputs(cell, features, self.embedding_dim, with_bias=False)

    @staticmethod
    def run_cell_alone(cell, input_projections, states):
        """The cell over all positions from their projected inputs `[batch, tgt, gates·units]`, nothing
        attended inside the loop → cell outputs s_i `[batch, tgt, units]`."""
        all_states = tf.scan(
            lambda carry, projection: recurrent_step(cell, projection, carry),
            tf.transpose(input_projections, [1, 0, 2]),  # [tgt, batch, gates·units]
            initializer=states,
        )
        return tf.transpose(all_states[0], [1, 0, 2])  # [tgt, batch, units] -> [batch, tgt, units]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class DeepOutputStyle(DecoderStyle):
    """Base of the styles that read out like the paper: a deep output from [s_i; c_i; E y_{i-1}]
    with maxout (`maxout_pieces` > 1) or tanh (1).

    Args:
        units: decoder state size.
        readout_units: deep output size (after maxout).
        maxout_pieces: linear pieces per maxout unit; 1 uses tanh.
    """

    def __init__(self, units: int, readout_units: int, maxout_pieces: int = 2, **kwargs):
        super().__init__(units, **kwargs)
        self.readout_units, self.maxout_pieces = readout_units, maxout_pieces
        self.deep_output = keras.layers.Dense(readout_units * maxout_pieces, name="deep_output")

    @classmethod
    def from_settings(cls, units: int, settings: dict[str, Any], **kwargs) -> DecoderStyle:
        return cls(units, settings["readout_units"], settings["maxout_pieces"], **kwargs)

    def build_for(self, embedding_dim: int, annotation_dim: int) -> None:
        self.deep_output.build((None, self.units + annotation_dim + embedding_dim))
        super().build_for(embedding_dim, annotation_dim)

    @property
    def readout_size(self) -> int:
        return self.readout_units

    @staticmethod
    def readout_inputs(states, contexts, embeddings):
        """[s_i; c_i; E y_{i-1}], for one position or all of them."""
        return tf.concat([states, contexts, embeddings], axis=-1)

    def readout_features(self, readout_inputs):
        hidden = self.deep_output(readout_inputs)  # [batch, (tgt,) readout_units · pieces]
        if self.maxout_pieces == 1:
            return tf.tanh(hidden)
        pieces = tf.reshape(
            hidden, tf.concat([tf.shape(hidden)[:-1], [self.readout_units, self.maxout_pieces]], 0)
        )
        return tf.reduce_max(pieces, axis=-1)

    def readout_multiply_adds(self, embedding_dim: int, annotation_dim: int) -> float:
        return (self.units + annotation_dim + embedding_dim) * self.readout_units * self.maxout_pieces

    def get_config(self):
        config = {"readout_units": self.readout_units, "maxout_pieces": self.maxout_pieces}
        return {**super().get_config(), **config}


class AdditiveStyle(DeepOutputStyle):
    """Base of the styles with Bahdanau's additive score, e_ij = v_a^T tanh(W_a s + U_a h_j).

    Args:
        units: decoder state size.
        attention_units: attention hidden size (the paper's n').
        readout_units: deep output size (after maxout).
        maxout_pieces: linear pieces per maxout unit; 1 uses tanh.
    """

    def __init__(
        self, units: int, attention_units: int, readout_units: int, maxout_pieces: int = 2, **kwargs
    ):
        super().__init__(units, readout_units, maxout_pieces, **kwargs)
        self.attention_units = attention_units
        self.attention = AdditiveAttention(attention_units, name="attention")

    @classmethod
    def from_settings(cls, units: int, settings: dict[str, Any], **kwargs) -> DecoderStyle:
        sizes = (units, settings["attention_units"], settings["readout_units"])
        return cls(*sizes, settings["maxout_pieces"], **kwargs)

    def build_for(self, embedding_dim: int, annotation_dim: int) -> None:
        self.attention.build_for_values(self.units, annotation_dim)
        super().build_for(embedding_dim, annotation_dim)

    def source_multiply_adds(self, annotation_dim: int) -> float:
        return annotation_dim * self.attention_units  # U_a h_j

    def target_multiply_adds(self, embedding_dim: int, annotation_dim: int, source_tokens: float) -> float:
        query = self.units * self.attention_units  # W_a s
        per_source = self.attention_units + annotation_dim  # v_a·tanh(…) and α_ij h_j
        return query + source_tokens * per_source + self.readout_multiply_adds(embedding_dim, annotation_dim)

    def get_config(self):
        return {**super().get_config(), "attention_units": self.attention_units}


@keras.saving.register_keras_serializable(package="attend")
class BahdanauStyle(AdditiveStyle):
    """Bahdanau et al. (2015), as the paper: attend from s_{i-1}, the context enters the cell.

    e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j), α_i = masked softmax_j, c_i = Σ_j α_ij h_j,
    s_i = cell([E y_{i-1}; c_i], s_{i-1}), readout from [s_i; c_i; E y_{i-1}].

    `keys` are U_a h_j; `values` are W_c h_j, every annotation through the cell kernel's context
    rows: W_c c_i = Σ_j α_ij W_c h_j, so a step needs a weighted sum over the source instead of a
    [2H × gates·units] product of its context. Inside the teacher-forced loop a step computes only
    α_i and that sum; the contexts c_i the readout needs are one batched product after the loop.
    """

    def cell_input_size(self, embedding_dim: int, annotation_dim: int) -> int:
        return embedding_dim + annotation_dim

    def project_source(self, cell, annotations, mask) -> SourceEncoding:
        keys = self.attention.project_keys(annotations)  # U_a h_j: [batch, src, attention_units]
        values = self.project_cell_inputs(cell, annotations)  # W_c h_j: [batch, src, gates·units]
        return SourceEncoding(annotations, keys, values, mask)

    def recur(self, cell, embedding_projection, states, source: SourceEncoding):
        """The recurrence of one step → (new states, α_i `[batch, src]` the cell input was built with)."""
        weights = self.attention.attention_weights(states[0], source.keys, source.mask)  # from s_{i-1}
        context_projection = weighted_sum(weights, source.values)  # W_c c_i: [batch, gates·units]
        return recurrent_step(cell, embedding_projection + context_projection, states), weights

    def step(self, cell, embedding_projection, embedding, states, source: SourceEncoding):
        new_states, weights = self.recur(cell, embedding_projection, states, source)
        context = weighted_sum(weights, source.annotations)  # c_i: [batch, 2H]
        return new_states, self.readout_inputs(new_states[0], context, embedding), weights

    def run(self, cell, embedding_projections, embeddings, states, source: SourceEncoding):
        def one_step(carry, embedding_projection):
            return self.recur(cell, embedding_projection, carry[0], source)

        time_major = tf.transpose(embedding_projections, [1, 0, 2])  # [tgt, batch, gates·units]
        weights0 = tf.zeros(tf.shape(source.annotations)[:2], embedding_projections.dtype)  # [batch, src]
        all_states, all_weights = tf.scan(one_step, time_major, initializer=(states, weights0))
        decoder_states = tf.transpose(all_states[0], [1, 0, 2])  # [tgt, batch, units] -> [batch, tgt, units]
        # the contexts of all steps in one batched product: [batch, tgt, src] x [batch, src, 2H]
        contexts = weighted_sum(tf.transpose(all_weights, [1, 0, 2]), source.annotations)
        return self.readout_inputs(decoder_states, contexts, embeddings)


@keras.saving.register_keras_serializable(package="attend")
class AdditiveAfterStyle(AdditiveStyle):
    """Bahdanau's additive score in Luong's place: the cell runs first, attention reads s_i after it.

    s_i = cell(E y_{i-1}, s_{i-1}), e_ij = v_a^T tanh(W_a s_i + U_a h_j), c_i = Σ_j α_ij h_j,
    readout from [s_i; c_i; E y_{i-1}]. No context enters the recurrence, so teacher forcing runs
    the cell over all positions first and attends for all of them at once afterwards: the
    TensorFlow tutorial's shape, and the fast variant the benchmark compares with the paper's.
    `keys` are U_a h_j; `values` are empty.
    """

    def cell_input_size(self, embedding_dim: int, annotation_dim: int) -> int:
        return embedding_dim

    def project_source(self, cell, annotations, mask) -> SourceEncoding:
        keys = self.attention.project_keys(annotations)  # U_a h_j: [batch, src, attention_units]
        return SourceEncoding(annotations, keys, annotations[:, :, :0], mask)

    def step(self, cell, embedding_projection, embedding, states, source: SourceEncoding):
        new_states = recurrent_step(cell, embedding_projection, states)
        context, weights = self.attention(new_states[0], source.keys, source.annotations, source.mask)
        return new_states, self.readout_inputs(new_states[0], context, embedding), weights

    def run(self, cell, embedding_projections, embeddings, states, source: SourceEncoding):
        decoder_states = self.run_cell_alone(cell, embedding_projections, states)  # [batch, tgt, units]
        contexts, _ = self.attention(decoder_states, source.keys, source.annotations, source.mask)
        return self.readout_inputs(decoder_states, contexts, embeddings)


@keras.saving.register_keras_serializable(package="attend")
class NoAttentionStyle(DeepOutputStyle):
    """The paper's RNNencdec baseline: no attention, every step reads the same sentence summary.

    c = [forward h_T; backward h_1] (the forward state at the last real token, the backward state at
    the first), s_i = cell([E y_{i-1}; c], s_{i-1}), readout from [s_i; c; E y_{i-1}]. `keys` hold
    c `[batch, 2H]` and `values` its cell-input projection W_c c `[batch, gates·units]`, both once
    per sentence. The attention reported for plots is all zeros.
    """

    def cell_input_size(self, embedding_dim: int, annotation_dim: int) -> int:
        return embedding_dim + annotation_dim

    @staticmethod
    def sentence_context(annotations, mask):
        """[forward state at the last real token; backward state at the first]: `[batch, 2H]`."""
        half = annotations.shape[-1] // 2
        if mask is None:
            last = tf.fill(tf.shape(annotations)[:1], tf.shape(annotations)[1] - 1)
        else:
            last = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1) - 1  # [batch]
        forward_last = tf.gather(annotations[:, :, :half], tf.maximum(last, 0), batch_dims=1)
        return tf.concat([forward_last, annotations[:, 0, half:]], axis=-1)

    def project_source(self, cell, annotations, mask) -> SourceEncoding:
        context = self.sentence_context(annotations, mask)  # [batch, 2H]
        return SourceEncoding(annotations, context, self.project_cell_inputs(cell, context), mask)

    def step(self, cell, embedding_projection, embedding, states, source: SourceEncoding):
        new_states = recurrent_step(cell, embedding_projection + source.values, states)
        weights = tf.zeros(tf.shape(source.annotations)[:2], embedding_projection.dtype)  # [batch, src]
        return new_states, self.readout_inputs(new_states[0], source.keys, embedding), weights

    def run(self, cell, embedding_projections, embeddings, states, source: SourceEncoding):
        decoder_states = self.run_cell_alone(cell, embedding_projections + source.values[:, None, :], states)
        shape = tf.concat([tf.shape(embeddings)[:2], tf.shape(source.keys)[-1:]], 0)  # [batch, tgt, 2H]
        contexts = tf.broadcast_to(source.keys[:, None, :], shape)
        return self.readout_inputs(decoder_states, contexts, embeddings)

    def target_multiply_adds(self, embedding_dim: int, annotation_dim: int, source_tokens: float) -> float:
        return self.readout_multiply_adds(embedding_dim, annotation_dim)


@keras.saving.register_keras_serializable(package="attend")
class LuongStyle(DecoderStyle):
    """Luong et al. (2015) global attention, with the attentional state h̃_i as the output layer's input.

    s_i = cell(x_i, s_{i-1}); e_ij = s_i^T W_a h_j (`general`) or s_i · h_j (`dot`);
    α_i = masked softmax_j; c_i = Σ_j α_ij h_j; h̃_i = tanh(W_c [c_i; s_i]); logits = W_s h̃_i + b.
    Without input feeding x_i = E y_{i-1}: teacher forcing runs the cell over all positions first
    and attends for all of them at once. With input feeding x_i = [E y_{i-1}; h̃_{i-1}] (h̃_0 = 0),
    carried as the last decoder state, so attention runs inside the loop, step by step.
    `keys` are W_a h_j (h_j for dot) and `values` W_c's context rows applied to every h_j
    (`LuongAttention`), both `[batch, src, units]`. There is no deep output: `readout_units` and
    `maxout_pieces` do not apply.

    Args:
        units: decoder state size (and of h̃).
        score: `"general"` or `"dot"` (needs annotations of `units` features).
        input_feeding: feed h̃_{i-1} into the next step's cell input.
    """

    own_settings = ("luong_score", "input_feeding")

    def __init__(self, units: int, score: str = "general", input_feeding: bool = False, **kwargs):
        super().__init__(units, **kwargs)
        self.score, self.input_feeding = score, input_feeding
        self.attention = LuongAttention(score, name="attention")

    @classmethod
    def from_settings(cls, units: int, settings: dict[str, Any], **kwargs) -> DecoderStyle:
        if settings["luong_score"] not in LUONG_SCORES:
            raise ValueError(f"luong_score={settings['luong_score']!r} is not one of {list(LUONG_SCORES)}")
        return cls(units, settings["luong_score"], settings["input_feeding"], **kwargs)

    def cell_input_size(self, embedding_dim: int, annotation_dim: int) -> int:
        return embedding_dim + (self.units if self.input_feeding else 0)

    def build_for(self, embedding_dim: int, annotation_dim: int) -> None:
        self.attention.build_for_values(self.units, annotation_dim)
        super().build_for(embedding_dim, annotation_dim)

    @property
    def readout_size(self) -> int:
        return self.units

    def initial_states(self, cell_states: list) -> list:
        feed = [tf.zeros_like(cell_states[0])] if self.input_feeding else []  # h̃_0 = 0
        return [*cell_states, *feed]

    def project_source(self, cell, annotations, mask) -> SourceEncoding:
        keys = self.attention.project_keys(annotations)  # W_a h_j (or h_j): [batch, src, units]
        values = self.attention.project_values(annotations)  # W_c^c h_j: [batch, src, units]
        return SourceEncoding(annotations, keys, values, mask)

    def step(self, cell, embedding_projection, embedding, states, source: SourceEncoding):
        if self.input_feeding:  # x_i = [E y_{i-1}; h̃_{i-1}]
            states, previous_attentional = states[:-1], states[-1]
            embedding_projection += self.project_cell_inputs(cell, previous_attentional)
        new_states = recurrent_step(cell, embedding_projection, states)
        attentional, weights = self.attention(new_states[0], source.keys, source.values, source.mask)
        feed = [attentional] if self.input_feeding else []
        return [*new_states, *feed], attentional, weights

    def run(self, cell, embedding_projections, embeddings, states, source: SourceEncoding):
        if not self.input_feeding:  # the cell alone in the loop, attention for all positions after it
            decoder_states = self.run_cell_alone(cell, embedding_projections, states)  # [batch, tgt, units]
            attentional, _ = self.attention(decoder_states, source.keys, source.values, source.mask)
            return attentional

        def one_step(carry, embedding_projection):
            new_states, attentional, _ = self.step(cell, embedding_projection, None, carry[0], source)
            return new_states, attentional

        time_major = tf.transpose(embedding_projections, [1, 0, 2])  # [tgt, batch, gates·units]
        _, all_attentional = tf.scan(one_step, time_major, initializer=(states, tf.zeros_like(states[0])))
        return tf.transpose(all_attentional, [1, 0, 2])  # [batch, tgt, units]

    def source_multiply_adds(self, annotation_dim: int) -> float:
        return annotation_dim * self.units if self.score == "general" else 0  # W_a h_j

    def target_multiply_adds(self, embedding_dim: int, annotation_dim: int, source_tokens: float) -> float:
        # per source position s_i·key_j and α_ij h_j, then W_c [c_i; s_i]
        return source_tokens * (self.units + annotation_dim) + (annotation_dim + self.units) * self.units

    def get_config(self):
        return {**super().get_config(), "score": self.score, "input_feeding": self.input_feeding}


ATTENTION_STYLES: dict[str, type[DecoderStyle]] = {
    "bahdanau": BahdanauStyle,
    "additive_after": AdditiveAfterStyle,
    "luong": LuongStyle,
    "none": NoAttentionStyle,
}


# the model section's settings that shape the style, with the config's defaults
STYLE_SETTINGS: dict[str, Any] = {
    key: getattr(ModelConfig, key)
    for key in (
        "attention_style",
        "attention_units",
        "readout_units",
        "maxout_pieces",
        "luong_score",
        "input_feeding",
    )
}


def make_style(units: int, **settings: Any) -> DecoderStyle:
    """The style a model section's settings choose, for a decoder of `units`: `settings` are
    `STYLE_SETTINGS` keys (the missing ones take the config's defaults); the layer is named after
    its style.

    Unknown settings, and settings that belong to another style and would change nothing here, are
    refused, so that a run never silently trains something other than what its config says.
    """
    unknown = sorted(set(settings) - set(STYLE_SETTINGS))
    if unknown:
        raise ValueError(
            f"unknown model settings {unknown}: the attention style reads {list(STYLE_SETTINGS)}"
        )
    settings = {**STYLE_SETTINGS, **settings}
    style = settings["attention_style"]
    if style not in ATTENTION_STYLES:
        raise ValueError(f"attention_style={style!r} is not one of {list(ATTENTION_STYLES)}")
    for other, other_class in ATTENTION_STYLES.items():
        owned = other_class.own_settings
        if other != style and any(settings[key] != STYLE_SETTINGS[key] for key in owned):
            defaults = ", ".join(str(STYLE_SETTINGS[key]).lower() for key in owned)
            raise ValueError(
                f"{' and '.join(owned)} apply to attention_style={other!r} only; "
                f"attention_style={style!r} takes the defaults ({defaults})"
            )
    return ATTENTION_STYLES[style].from_settings(units, settings, name=style)
