"""Additive attention of Bahdanau et al. (2015): e_ij = v_a^T tanh(W_a s + U_a h_j)."""

from __future__ import annotations

import keras
import tensorflow as tf

from app.models.precision import weight_as


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
            mask = values_mask
        else:
            # [batch, tgt, 1, units] + [batch, 1, src, units] -> [batch, tgt, src]
            hidden = tf.tanh(projected_query[:, :, None, :] + projected_keys[:, None, :, :])
            scores = tf.einsum("btsu,u->bts", hidden, score_vector)
            mask = None if values_mask is None else values_mask[:, None, :]
        if mask is not None:
            scores = tf.where(mask, scores, tf.cast(scores.dtype.min, scores.dtype))
        weights = tf.nn.softmax(scores, axis=-1)
        if mask is not None:
            weights = tf.where(mask, weights, tf.zeros_like(weights))  # exactly zero, whatever the dtype
        return weights

    @staticmethod
    def weighted_sum(weights, values):
        """Σ_j α_j v_j: `[batch, src]` × `[batch, src, dim]` → `[batch, dim]`, or with a `tgt` axis."""
        if weights.shape.rank == 2:
            return tf.einsum("bs,bsd->bd", weights, values)
        return tf.einsum("bts,bsd->btd", weights, values)

    def call(self, query, projected_keys, values, values_mask=None):
        weights = self.attention_weights(query, projected_keys, values_mask)
        return self.weighted_sum(weights, values), weights

    def compute_output_shape(self, query_shape, projected_keys_shape, values_shape, values_mask_shape=None):
        return (*query_shape[:-1], values_shape[-1]), (*query_shape[:-1], values_shape[1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}
