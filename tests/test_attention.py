"""Additive and Luong attention: golden values, exact zeros at padding, 2-D and 3-D queries agree."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from app.models.attention import AdditiveAttention, LuongAttention


def with_random_weights(attention, query_dim: int, values_dim: int, seed: int):
    """`attention` built for these sizes, every weight drawn from a seeded normal (far from uniform)."""
    attention.build_for_values(query_dim, values_dim)
    rng = np.random.default_rng(seed)
    for weight in attention.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    return attention


def make_attention(query_dim=3, values_dim=4, units=5, seed=0) -> AdditiveAttention:
    return with_random_weights(AdditiveAttention(units), query_dim, values_dim, seed)


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


# === Luong et al. (2015) global attention ===
QUERY_DIM = 3


def make_luong(score="general", values_dim=4, seed=0) -> LuongAttention:
    return with_random_weights(LuongAttention(score), QUERY_DIM, values_dim, seed)


def numpy_luong(attention, query, values, mask):
    """e_j = s^T W_a h_j (general) or s·h_j (dot), softmax over unmasked j, c = Σ α_j h_j,
    h̃ = tanh(W_c [c; s]) (one sentence; the layer stores W_a transposed and W_c as [c; s] rows)."""
    if attention.score == "general":
        W_a = attention.key_kernel.numpy().T  # [query, values]
        scores = np.array([query @ W_a @ h for h in values])
    else:
        scores = np.array([query @ h for h in values])
    scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    context = weights @ values
    attentional = np.tanh(np.concatenate([context, query]) @ attention.attentional_kernel.numpy())
    return attentional, weights


def luong_inputs(values_dim, seed):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(2, QUERY_DIM)).astype("float32")
    values = rng.normal(size=(2, 6, values_dim)).astype("float32")
    mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
    return query, values, mask


@pytest.mark.parametrize(("score", "values_dim"), [("general", 4), ("dot", QUERY_DIM)])
def test_luong_matches_the_formula_and_padding_gets_exactly_zero(score, values_dim):
    attention = make_luong(score, values_dim)
    query, values, mask = luong_inputs(values_dim, seed=1)
    keys, projected = attention.project_keys(values), attention.project_values(values)
    attentional, weights = attention(query, keys, projected, mask)
    for row in range(2):
        expected_attentional, expected_weights = numpy_luong(attention, query[row], values[row], mask[row])
        np.testing.assert_allclose(weights[row], expected_weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(attentional[row], expected_attentional, rtol=1e-5, atol=1e-6)
    assert (weights.numpy()[1, 4:] == 0.0).all()
    np.testing.assert_allclose(weights.numpy().sum(axis=-1), 1.0, rtol=1e-6)


def test_luong_golden_values_by_hand():
    """One query, two positions, weights small enough to follow on paper: W_a = I (general)."""
    attention = LuongAttention("general")
    attention.build_for_values(2, 2)
    attention.key_kernel.assign(np.eye(2, dtype="float32"))
    attention.attentional_kernel.assign(np.array([[1, 0], [0, 0], [0, 0], [0, 1]], "float32"))  # W_c
    query = np.array([[np.log(3.0), 0.0]], "float32")  # s
    values = np.array([[[1.0, 2.0], [0.0, 4.0], [5.0, 5.0]]], "float32")  # h_1, h_2, padding
    mask = np.array([[True, True, False]])
    keys, projected = attention.project_keys(values), attention.project_values(values)
    attentional, weights = attention(query, keys, projected, mask)
    # e = s·h_j = (log 3, 0) → α = (3/4, 1/4, 0); c = (3/4, 10/4); h̃ = tanh(c_1, s_2) = tanh(3/4, 0)
    np.testing.assert_allclose(weights, [[0.75, 0.25, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(attentional, [[np.tanh(0.75), 0.0]], rtol=1e-6, atol=1e-7)


def test_luong_padding_values_do_not_change_the_attentional_state():
    attention = make_luong()
    query, values, mask = luong_inputs(4, seed=2)
    garbage = values.copy()
    garbage[1, 4:] = 1e3
    first, _ = attention(query, attention.project_keys(values), attention.project_values(values), mask)
    second, _ = attention(query, attention.project_keys(garbage), attention.project_values(garbage), mask)
    np.testing.assert_allclose(first, second, rtol=1e-6)


@pytest.mark.parametrize(("score", "values_dim"), [("general", 4), ("dot", QUERY_DIM)])
def test_luong_all_steps_at_once_equals_step_by_step(score, values_dim):
    attention = make_luong(score, values_dim)
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(2, 4, QUERY_DIM)).astype("float32")  # [batch, tgt, units]
    values = rng.normal(size=(2, 6, values_dim)).astype("float32")
    mask = np.array([[True] * 6, [True] * 2 + [False] * 4])
    keys, projected = attention.project_keys(values), attention.project_values(values)
    attentional, weights = attention(queries, keys, projected, mask)
    assert attentional.shape == (2, 4, QUERY_DIM) and weights.shape == (2, 4, 6)
    for step in range(4):
        one_attentional, one_weights = attention(queries[:, step], keys, projected, mask)
        np.testing.assert_allclose(attentional[:, step], one_attentional, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights[:, step], one_weights, rtol=1e-5, atol=1e-6)
    assert tf.reduce_all(weights[1, :, 2:] == 0.0)


def test_luong_dot_needs_annotations_of_the_state_size_and_general_has_no_such_limit():
    with pytest.raises(ValueError, match="encoder_units"):
        LuongAttention("dot").build_for_values(3, 4)
    make_luong("general", values_dim=4)  # any annotation size
    assert [w.name for w in make_luong("dot", values_dim=3).weights] == ["attentional_kernel"]  # no W_a
    with pytest.raises(ValueError, match="general"):
        LuongAttention("concat")
