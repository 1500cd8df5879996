"""In-graph, batched decoding over a step function `step_fn(tokens, state) -> (logits, state)`.

Core TensorFlow ops only (a `tf.while_loop`), so the search exports into a SavedModel that
stock TensorFlow Serving runs; no model is needed to test it (drive it with a fake step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

StepFunction = Callable[[tf.Tensor, dict], tuple[tf.Tensor, dict]]
PAD_ID, START_ID, END_ID = 0, 1, 2  # the tokenizers' reserved ids


class SearchResult(NamedTuple):
    """`tokens [batch, steps]` (0 after each sentence's end id), `lengths [batch]` (end id
    included), `scores [batch]` (sum of token log-probabilities), `collected [batch, steps, …]`
    (the state entry named by `collect` after each step, e.g. attention weights) or None."""

    tokens: tf.Tensor
    lengths: tf.Tensor
    scores: tf.Tensor
    collected: tf.Tensor | None


def max_output_lengths(source_lengths: tf.Tensor, ratio: float, offset: int, ceiling: int) -> tf.Tensor:
    """Per-sentence output limit tied to the source length: min(ratio·src + offset, ceiling)."""
    limits = tf.cast(tf.math.ceil(tf.cast(source_lengths, tf.float32) * ratio), tf.int32) + offset
    return tf.minimum(limits, ceiling)


def greedy_search(
    step_fn: StepFunction,
    state: dict,
    max_lengths: tf.Tensor,
    start_id: int = START_ID,
    end_id: int = END_ID,
    collect: str | None = None,
) -> SearchResult:
    """Picks the most likely token at each step until every sentence has ended or hit its limit.

    A sentence that reaches `max_lengths[i]` tokens without ending is ended there (its last
    token becomes `end_id`). The loop stops as soon as all sentences have ended.
    """
    batch_size = tf.shape(max_lengths)[0]
    max_steps = tf.maximum(tf.reduce_max(max_lengths), 1)
    tokens = tf.fill([batch_size], tf.constant(start_id, tf.int32))
    finished = tf.zeros([batch_size], tf.bool)
    scores = tf.zeros([batch_size], tf.float32)
    lengths = tf.zeros([batch_size], tf.int32)
    outputs = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=tf.TensorShape([None]))
    collected = tf.TensorArray(tf.float32, size=0, dynamic_size=True) if collect else None

    def keep_going(step, tokens, finished, scores, lengths, state, outputs, collected):
        # at least one step, so that an empty batch still stacks to [batch, 1]
        unfinished = tf.logical_or(step == 0, tf.logical_not(tf.reduce_all(finished)))
        return tf.logical_and(step < max_steps, unfinished)

    def body(step, tokens, finished, scores, lengths, state, outputs, collected):
        logits, state = step_fn(tokens, state)
        log_probs = tf.nn.log_softmax(logits)  # [batch, vocab]
        next_tokens = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        next_tokens = tf.where(step >= max_lengths - 1, end_id, next_tokens)  # forced end at the limit
        token_scores = tf.gather(log_probs, next_tokens, batch_dims=1)
        scores += tf.where(finished, 0.0, token_scores)
        lengths += tf.cast(tf.logical_not(finished), tf.int32)
        next_tokens = tf.where(finished, PAD_ID, next_tokens)
        finished = tf.logical_or(finished, tf.equal(next_tokens, end_id))
        outputs = outputs.write(step, next_tokens)
        if collect:
            collected = collected.write(step, tf.cast(state[collect], tf.float32))
        return step + 1, next_tokens, finished, scores, lengths, state, outputs, collected

    loop_vars = (tf.constant(0), tokens, finished, scores, lengths, state, outputs, collected)
    if collect is None:
        loop_vars = loop_vars[:-1] + (tf.constant(0),)  # a placeholder the loop carries unchanged
    _, _, _, scores, lengths, _, outputs, collected = tf.while_loop(keep_going, body, loop_vars)
    tokens = tf.transpose(outputs.stack())  # [steps, batch] -> [batch, steps]
    if collect:
        # [steps, batch, …] -> [batch, steps, …]
        stacked = collected.stack()
        collected = tf.transpose(stacked, tf.concat([[1, 0], tf.range(2, tf.rank(stacked))], 0))
    else:
        collected = None
    return SearchResult(tokens, lengths, scores, collected)
