"""Attention layers: Bahdanau et al.'s additive score, Luong et al.'s multiplicative global attention.

Both project what depends only on the source once per sentence, so a decoding step projects only
its query, and both give padding positions exactly zero weight.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from app.models.precision import weight_as


def masked_softmax(scores: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """Softmax over the last (source) axis with exactly zero weight where `mask` is False.

    `scores` is `[batch, src]` or `[batch, tgt, src]`; `mask` is bool `[batch, src]` or None.
    """
    if mask is None:
        return tf.nn.softmax(scores, axis=-1)
    if scores.shape.rank == 3:
        mask = mask[:, None, :]  # [batch, 1, src]
    scores = tf.where(mask, scores, tf.cast(scores.dtype.min, scores.dtype))
    weights = tf.nn.softmax(scores, axis=-1)
    return tf.where(mask, weights, tf.zeros_like(weights))  # exactly zero, whatever the dtype


def weighted_sum(weights: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """Σ_j α_j v_j: `[batch, src]` × `[batch, src, dim]` → `[batch, dim]`, or with a `tgt` axis."""
    if weights.shape.rank == 2:
        return tf.einsum("bs,bsd->bd", weights, values)
    return tf.einsum("bts,bsd->btd", weights, values)


@keras.saving.register_keras_serializable(package="attend")
class AdditiveAttention(keras.layers.Layer):
    """Bahdanau's additive attention with the keys projected once per sentence.

    `project_keys` computes U_a h_j for all source positions before the decoding loop; each
    step then only projects its query (W_a s). Padding positions get exactly zero weight.

    Args:
        units: size of the attention hidden layer (the paper's n').

    Call arguments:
        query: decoder state, `[batch, units_q]` (one step) or `[batch, tgt, units_q]` (all steps).
        projected_keys: `project_keys(values)`, `[batch, src, units]`.
        values: encoder annotations h_j, `[batch, src, dim]`.
        values_mask: bool `[batch, src]`, False at padding.

    Returns:
        `(context, weights)`: `[batch, dim]` and `[batch, src]` for a 2-D query, with a `tgt` axis
        after `batch` for a 3-D query.

    Example:
        >>> attention = AdditiveAttention(8)
        >>> keys = attention.project_keys(annotations)
        >>> context, weights = attention(state, keys, annotations, source_mask)
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, query_shape, projected_keys_shape=None, values_shape=None, values_mask_shape=None):
        self.query_kernel = self.add_weight(name="query_kernel", shape=(query_shape[-1], self.units))  # W_a
        self.key_kernel = self.add_weight(name="key_kernel", shape=(values_shape[-1], self.units))  # U_a
        self.key_bias = self.add_weight(name="key_bias", shape=(self.units,), initializer="zeros")
        self.score_vector = self.add_weight(name="score_vector", shape=(self.units,))  # v_a

    def build_for_values(self, query_dim: int, values_dim: int) -> None:
        """Builds the weights from sizes alone, for use before the first call (decoder `build`)."""
        if not self.built:
            self.build((None, query_dim), None, (None, None, values_dim))
            self.built = True

    def project_keys(self, values: tf.Tensor) -> tf.Tensor:
        # [batch, src, dim] x [dim, units] -> [batch, src, units]
        key_kernel, key_bias = (
            weight_as(self.key_kernel, values.dtype),
            weight_as(self.key_bias, values.dtype),
        )
        return tf.einsum("bsd,du->bsu", values, key_kernel) + key_bias

    def attention_weights(self, query, projected_keys, values_mask=None):
        """α over the source positions: `[batch, src]` for a 2-D query, `[batch, tgt, src]` for a 3-D one."""
        projected_query = tf.matmul(query, weight_as(self.query_kernel, query.dtype))  # [batch, (tgt,) units]
        score_vector = weight_as(self.score_vector, query.dtype)
        if query.shape.rank == 2:
            # [batch, 1, units] + [batch, src, units] -> [batch, src]
            hidden = tf.tanh(projected_query[:, None, :] + projected_keys)
            scores = tf.einsum("bsu,u->bs", hidden, score_vector)
        else:
            # [batch, tgt, 1, units] + [batch, 1, src, units] -> [batch, tgt, src]
            hidden = tf.tanh(projected_query[:, :, None, :] + projected_keys[:, None, :, :])
            scores = tf.einsum("btsu,u->bts", hidden, score_vector)
        return masked_softmax(scores, values_mask)

    weighted_sum = staticmethod(weighted_sum)

    def call(self, query, projected_keys, values, values_mask=None):
        weights = self.attention_weights(query, projected_keys, values_mask)
        return self.weighted_sum(weights, values), weights

    def compute_output_shape(self, query_shape, projected_keys_shape, values_shape, values_mask_shape=None):
        return (*query_shape[:-1], values_shape[-1]), (*query_shape[:-1], values_shape[1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


LUONG_SCORES = ("general", "dot")


@keras.saving.register_keras_serializable(package="attend")
class LuongAttention(keras.layers.Layer):
    """Luong et al.'s (2015) global attention, ending in the attentional state h̃ = tanh(W_c [c; s]).

    Scores are `general`, e = s^T W_a h_j, or `dot`, e = s · h_j (no weights; the annotations
    must have the decoder state's size). The key side of the score (W_a h_j, or h_j itself) and
    the context rows of W_c applied to every annotation are projected once per sentence
    (`project_keys`, `project_values`): W_c [c; s] = Σ_j α_j (W_c^c h_j) + W_c^s s, so a step
    needs one weighted sum over the source, and no [dim × units] product of its context.
    No biases, as in the paper (and OpenNMT-py's `general`/`dot`).

    The annotation size does not show in the call inputs (they are already projected), so the
    layer is built with `build_for_values(query_dim, values_dim)` before its first use.

    Args:
        score: `"general"` or `"dot"`.

    Call arguments:
        query: decoder state s_i, `[batch, units]` (one step) or `[batch, tgt, units]` (all steps).
        keys: `project_keys(values)`, `[batch, src, units]`.
        projected_values: `project_values(values)`, `[batch, src, units]`.
        values_mask: bool `[batch, src]`, False at padding.

    Returns:
        `(attentional_state, weights)`: `[batch, units]` and `[batch, src]` for a 2-D query, with a
        `tgt` axis after `batch` for a 3-D query.

    Example:
        >>> attention = LuongAttention("general")
        >>> attention.build_for_values(units, annotation_dim)
        >>> keys, values = attention.project_keys(annotations), attention.project_values(annotations)
        >>> attentional_state, weights = attention(state, keys, values, source_mask)
    """

    def __init__(self, score: str = "general", **kwargs):
        super().__init__(**kwargs)
        if score not in LUONG_SCORES:
            raise ValueError(f"score={score!r} is not one of {list(LUONG_SCORES)}")
        self.score = score

    def build(self, query_shape, keys_shape=None, projected_values_shape=None, values_mask_shape=None):
        raise ValueError(
            "LuongAttention needs the annotation size, which its (projected) call inputs do not show: "
            "build it with build_for_values(query_dim, values_dim) first"
        )

    def build_for_values(self, query_dim: int, values_dim: int) -> None:
        """Creates W_a (general only) and W_c from the decoder state and annotation sizes."""
        if self.built:
            return
        if self.score == "dot" and values_dim != query_dim:
            raise ValueError(
                f"luong_score='dot' compares the decoder state ({query_dim}) with the annotations "
                f"({values_dim}) and needs equal sizes: set encoder_units to half the decoder units "
                "(the annotations join both directions), or use luong_score='general'"
            )
        self.query_dim, self.values_dim = query_dim, values_dim
        if self.score == "general":  # stored as W_a^T: keys = h_j W_a^T, score = s · key_j
            self.key_kernel = self.add_weight(name="key_kernel", shape=(values_dim, query_dim))
        # W_c over [c; s]: the first values_dim rows read the context, the rest the state
        self.attentional_kernel = self.add_weight(
            name="attentional_kernel", shape=(values_dim + query_dim, query_dim)
        )
        self.built = True

    def project_keys(self, values: tf.Tensor) -> tf.Tensor:
        """The annotations' side of the score, `[batch, src, units]`: W_a h_j (general) or h_j (dot)."""
        if self.score == "dot":
            return values
        # [batch, src, dim] x [dim, units] -> [batch, src, units]
        return tf.einsum("bsd,du->bsu", values, weight_as(self.key_kernel, values.dtype))

    def project_values(self, values: tf.Tensor) -> tf.Tensor:
        """W_c^c h_j, the context rows of W_c applied to every annotation: `[batch, src, units]`."""
        context_rows = weight_as(self.attentional_kernel, values.dtype)[: self.values_dim]
        return tf.einsum("bsd,du->bsu", values, context_rows)

    def attention_weights(self, query, keys, values_mask=None):
        """α over the source positions: `[batch, src]` for a 2-D query, `[batch, tgt, src]` for a 3-D one."""
        if query.shape.rank == 2:
            scores = tf.einsum("bu,bsu->bs", query, keys)  # [batch, src]
        else:
            scores = tf.einsum("btu,bsu->bts", query, keys)  # [batch, tgt, src]
        return masked_softmax(scores, values_mask)

    def attentional_state(self, query, weights, projected_values):
        """h̃ = tanh(Σ_j α_j W_c^c h_j + W_c^s s) = tanh(W_c [c; s]), `[batch, (tgt,) units]`."""
        state_rows = weight_as(self.attentional_kernel, query.dtype)[self.values_dim :]
        context_part = weighted_sum(weights, projected_values)  # [batch, (tgt,) units]
        return tf.tanh(context_part + tf.matmul(query, state_rows))

    def call(self, query, keys, projected_values, values_mask=None):
        weights = self.attention_weights(query, keys, values_mask)
        return self.attentional_state(query, weights, projected_values), weights

    def compute_output_shape(self, query_shape, keys_shape, projected_values_shape, values_mask_shape=None):
        return query_shape, (*query_shape[:-1], keys_shape[1])

    def get_config(self):
        return {**super().get_config(), "score": self.score}
