"""Sampling (`SamplingSearch`, `sampling_choice`) driven by fake step functions: reproducible by seed,
greedy as the temperature goes to 0, and drawing one step's tokens with the model's softmax."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from app.config import load_config
from app.models.decoding import SamplingSearch
from app.models.search import greedy_search
from app.special_tokens import END_ID

VOCAB = 8
# one step's logits: END_ID (2) is the likeliest, so a greedy search ends at once
STEP_LOGITS = np.array([-1.0, -3.0, 1.5, 0.2, 1.0, -0.5, 0.7, 0.0], np.float32)


def random_step(seed: int = 0):
    """step_fn with logits that depend on the fed token and the step (no END bias: long outputs)."""
    table = tf.constant(np.random.default_rng(seed).normal(0, 2, (VOCAB, 16, VOCAB)), tf.float32)

    def step(tokens, state):
        logits = tf.gather_nd(table, tf.stack([tokens, tf.minimum(state["position"], 15)], axis=1))
        return logits, {**state, "position": state["position"] + 1}

    return step


def fixed_step(tokens, state):
    """The same logits for every row at every step."""
    return tf.tile(tf.constant(STEP_LOGITS)[None, :], [tf.shape(tokens)[0], 1]), state


def start(batch: int) -> dict:
    return {"position": tf.zeros([batch], tf.int32)}


def sampler(seed: int, temperature: float = 1.0, top_k: int = 0) -> SamplingSearch:
    return SamplingSearch(tf.constant(temperature), tf.constant(top_k), tf.constant(seed, tf.int64))


def test_the_same_seed_gives_the_same_output_and_another_seed_another():
    limits = tf.fill([6], 12)
    first = sampler(7).search(random_step(), start(6), limits)
    again = sampler(7).search(random_step(), start(6), limits)
    other = sampler(8).search(random_step(), start(6), limits)
    np.testing.assert_array_equal(first.tokens.numpy(), again.tokens.numpy())
    np.testing.assert_array_equal(first.scores.numpy(), again.scores.numpy())
    assert first.tokens.shape != other.tokens.shape or (first.tokens.numpy() != other.tokens.numpy()).any()


def test_a_temperature_near_zero_is_greedy_search_with_its_scores():
    limits = tf.fill([5], 12)
    greedy = greedy_search(random_step(), start(5), limits)
    cold = sampler(3, temperature=1e-6).search(random_step(), start(5), limits)
    np.testing.assert_array_equal(cold.tokens.numpy(), greedy.tokens.numpy())
    np.testing.assert_array_equal(cold.lengths.numpy(), greedy.lengths.numpy())
    np.testing.assert_allclose(cold.scores.numpy(), greedy.scores.numpy(), rtol=1e-6)


def first_tokens(draws: int, temperature: float, top_k: int) -> np.ndarray:
    """One step's draws in `draws` sentences (limit 2: the second token is the forced end)."""
    result = sampler(11, temperature, top_k).search(fixed_step, start(draws), tf.fill([draws], 2))
    return result.tokens.numpy()[:, 0]


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, 0), (0.5, 0), (2.0, 3)])
def test_one_step_s_draws_follow_the_tempered_top_k_softmax(temperature, top_k):
    draws = 6000
    tokens = first_tokens(draws, temperature, top_k)
    scaled = STEP_LOGITS / temperature
    if top_k:
        scaled = np.where(scaled < np.sort(scaled)[-top_k], -np.inf, scaled)
    expected = np.exp(scaled - scaled.max())
    expected /= expected.sum()
    observed = np.bincount(tokens, minlength=VOCAB) / draws
    assert (observed[expected == 0] == 0).all()  # nothing outside the top k is ever drawn
    # chi-square over the tokens that can occur, against the 0.1 % critical value (df ≤ 7: 24.3)
    possible = expected > 0
    chi_square = draws * ((observed[possible] - expected[possible]) ** 2 / expected[possible]).sum()
    assert chi_square < 24.3, (observed, expected)


def test_scores_are_the_model_s_log_probabilities_of_the_drawn_tokens():
    result = sampler(5, temperature=3.0, top_k=2).search(fixed_step, start(50), tf.fill([50], 2))
    log_probs = STEP_LOGITS - np.log(np.exp(STEP_LOGITS).sum())  # temperature 1, whole vocabulary
    tokens = result.tokens.numpy()
    expected = log_probs[tokens[:, 0]] + np.where(tokens[:, 0] == END_ID, 0, log_probs[END_ID])
    np.testing.assert_allclose(result.scores.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("decode.sampling_temperature=0", "decode.sampling_temperature: expected greater than 0"),
        ("decode.sampling_topk=-1", "decode.sampling_topk: expected at least 0"),
    ],
)
def test_sampling_settings_are_range_checked(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("smoke", [override])
