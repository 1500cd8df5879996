"""Additive attention: golden values, exact zeros at padding, 2-D and 3-D queries agree."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from app.models.attention import AdditiveAttention


def make_attention(query_dim=3, values_dim=4, units=5, seed=0) -> AdditiveAttention:
    attention = AdditiveAttention(units)
    attention.build_for_values(query_dim, values_dim)
    rng = np.random.default_rng(seed)
    for weight in attention.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    return attention


def numpy_attention(attention, query, values, mask):
    """e_j = v·tanh(W q + U h_j + b), softmax over unmasked j, c = Σ α_j h_j (one sentence)."""
    W, U, b, v = (
        w.numpy()
        for w in (attention.query_kernel, attention.key_kernel, attention.key_bias, attention.score_vector)
    )
    scores = np.tanh(query @ W + values @ U + b) @ v
    scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    return weights @ values, weights


def test_matches_the_formula_and_padding_gets_exactly_zero():
    attention = make_attention()
    rng = np.random.default_rng(1)
    query = rng.normal(size=(2, 3)).astype("float32")
    values = rng.normal(size=(2, 6, 4)).astype("float32")
    mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
    context, weights = attention(query, attention.project_keys(values), values, mask)
    for row in range(2):
        expected_context, expected_weights = numpy_attention(attention, query[row], values[row], mask[row])
        np.testing.assert_allclose(weights[row], expected_weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(context[row], expected_context, rtol=1e-5, atol=1e-6)
    assert (weights.numpy()[1, 4:] == 0.0).all()
    np.testing.assert_allclose(weights.numpy().sum(axis=-1), 1.0, rtol=1e-6)


def test_padding_values_do_not_change_the_context():
    attention = make_attention()
    rng = np.random.default_rng(2)
    query = rng.normal(size=(1, 3)).astype("float32")
    values = rng.normal(size=(1, 5, 4)).astype("float32")
    mask = np.array([[True, True, True, False, False]])
    garbage = values.copy()
    garbage[:, 3:] = 1e3
    first, _ = attention(query, attention.project_keys(values), values, mask)
    second, _ = attention(query, attention.project_keys(garbage), garbage, mask)
    np.testing.assert_allclose(first, second, rtol=1e-6)


def test_all_steps_at_once_equals_step_by_step():
    attention = make_attention()
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(2, 4, 3)).astype("float32")  # [batch, tgt, q]
    values = rng.normal(size=(2, 6, 4)).astype("float32")
    mask = np.array([[True] * 6, [True] * 2 + [False] * 4])
    keys = attention.project_keys(values)
    contexts, weights = attention(queries, keys, values, mask)
    assert contexts.shape == (2, 4, 4) and weights.shape == (2, 4, 6)
    for step in range(4):
        context, weight = attention(queries[:, step], keys, values, mask)
        np.testing.assert_allclose(contexts[:, step], context, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights[:, step], weight, rtol=1e-5, atol=1e-6)
    assert tf.reduce_all(weights[1, :, 2:] == 0.0)
