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


def _batch_major_shapes(state: dict):
    """While-loop shape invariants: every state entry keeps its shape except the batch axis."""
    return tf.nest.map_structure(lambda tensor: tf.TensorShape([None]).concatenate(tensor.shape[1:]), state)


def greedy_search(
    step_fn: StepFunction,
    state: dict,
    max_lengths: tf.Tensor,
    start_id: int = START_ID,
    end_id: int = END_ID,
    collect: str | None = None,
    output_length: int | None = None,
) -> SearchResult:
    """Picks the most likely token at each step until every sentence has ended or hit its limit.

    A sentence that reaches `max_lengths[i]` tokens without ending is ended there (its last
    token becomes `end_id`). The loop stops as soon as all sentences have ended. With
    `output_length`, tokens come back as a fixed `[batch, output_length]` buffer (limits are
    capped to it), the static shapes XLA and TPUs need; `collect` is not available then.
    """
    batch_size = tf.shape(max_lengths)[0]
    if output_length is not None:
        max_lengths = tf.minimum(max_lengths, output_length)
        outputs = tf.zeros([batch_size, output_length], tf.int32)
    else:
        outputs = tf.zeros([batch_size, 0], tf.int32)
    max_steps = tf.maximum(tf.reduce_max(max_lengths), 1)
    collected = tf.zeros(tf.concat([[batch_size, 0], tf.shape(state[collect])[1:]], 0)) if collect else tf.zeros([0])

    def keep_going(step, tokens, finished, scores, lengths, state, outputs, collected):
        # at least one step, so that an empty batch still gives [batch, 1]
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
        if output_length is not None:  # write column `step` of the fixed buffer
            outputs += tf.one_hot(step, output_length, dtype=tf.int32)[None, :] * next_tokens[:, None]
        else:
            outputs = tf.concat([outputs, next_tokens[:, None]], axis=1)
        if collect:
            collected = tf.concat([collected, tf.cast(state[collect], tf.float32)[:, None]], axis=1)
        return step + 1, next_tokens, finished, scores, lengths, state, outputs, collected

    initial = (
        tf.constant(0),
        tf.fill([batch_size], tf.constant(start_id, tf.int32)),
        tf.zeros([batch_size], tf.bool),  # finished
        tf.zeros([batch_size], tf.float32),  # scores
        tf.zeros([batch_size], tf.int32),  # lengths
        state,
        outputs,
        collected,
    )
    invariants = (
        tf.TensorShape([]), tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([None]),
        tf.TensorShape([None]), _batch_major_shapes(state),
        tf.TensorShape([None, output_length]),
        tf.TensorShape([None, None]).concatenate(state[collect].shape[1:]) if collect else tf.TensorShape([0]),
    )
    _, _, _, scores, lengths, _, outputs, collected = tf.while_loop(
        keep_going, body, initial, shape_invariants=invariants
    )
    return SearchResult(outputs, lengths, scores, collected if collect else None)


def length_penalty(lengths: tf.Tensor, alpha: float) -> tf.Tensor:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016); alpha = 0 ranks by log-probability."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def _tile_beams(tensor: tf.Tensor, beam_width: int) -> tf.Tensor:
    """[batch, …] → [batch * beam, …], each row repeated beam_width times in a row."""
    return tf.repeat(tensor, beam_width, axis=0)


def beam_search(
    step_fn: StepFunction,
    state: dict,
    max_lengths: tf.Tensor,
    beam_width: int = 4,
    alpha: float = 0.6,
    start_id: int = START_ID,
    end_id: int = END_ID,
    collect: str | None = None,
    constant_keys: tuple[str, ...] = (),
) -> SearchResult:
    """Batched beam search; every state entry must be batch-major (first axis = batch).

    `constant_keys` name state entries that steps never change (encoder outputs): they are
    tiled once and never reordered.

    Hypotheses compete by length-normalised score, log P / length_penalty(length, alpha).
    Ended hypotheses stay in the beam with their score frozen (they extend only by padding at
    no cost), so a finished short translation is kept unless longer ones beat it. A sentence's
    hypotheses are forced to end at `max_lengths`; the loop stops when every beam has ended.
    Returns the best hypothesis per sentence; `scores` are its log-probabilities.
    """
    batch_size = tf.shape(max_lengths)[0]
    width = beam_width
    state = tf.nest.map_structure(lambda tensor: _tile_beams(tensor, width), state)
    beam_limits = tf.reshape(_tile_beams(max_lengths, width), [batch_size, width])
    # only beam 0 is live at first, so the first expansion does not pick the same token K times
    log_probs = tf.tile(tf.concat([[0.0], tf.fill([width - 1], -1e9)], 0)[None, :], [batch_size, 1])
    sequences = tf.zeros([batch_size, width, 0], tf.int32)
    if collect:  # [batch, beam, steps, *entry shape]
        entry_shape = tf.shape(state[collect])[1:]
        history = tf.zeros(tf.concat([[batch_size, width, 0], entry_shape], 0), tf.float32)
    else:
        history = tf.zeros([0])
    initial = (
        tf.constant(0),
        tf.fill([batch_size * width], tf.constant(start_id, tf.int32)),
        log_probs,
        tf.zeros([batch_size, width], tf.bool),  # finished
        tf.zeros([batch_size, width], tf.int32),  # lengths
        sequences,
        state,
        history,
    )
    max_steps = tf.maximum(tf.reduce_max(max_lengths), 1)

    def keep_going(step, tokens, log_probs, finished, lengths, sequences, state, history):
        unfinished = tf.logical_or(step == 0, tf.logical_not(tf.reduce_all(finished)))
        return tf.logical_and(step < max_steps, unfinished)

    def body(step, tokens, log_probs, finished, lengths, sequences, state, history):
        logits, state = step_fn(tokens, state)
        vocab_size = tf.shape(logits)[-1]
        step_log_probs = tf.reshape(tf.nn.log_softmax(logits), [batch_size, width, vocab_size])  # [B, K, V]
        # at its limit a hypothesis may only end (scored, like greedy's forced end, by the model)
        at_limit = (step >= beam_limits - 1)[:, :, None]
        is_end = tf.one_hot(end_id, vocab_size, on_value=True, off_value=False)
        step_log_probs = tf.where(tf.logical_and(at_limit, tf.logical_not(is_end)), -1e9, step_log_probs)
        # an ended hypothesis extends by padding only, at no cost
        only_pad = tf.one_hot(PAD_ID, vocab_size, on_value=0.0, off_value=-1e9)
        step_log_probs = tf.where(finished[:, :, None], only_pad, step_log_probs)
        candidates = log_probs[:, :, None] + step_log_probs  # [B, K, V]
        candidate_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)  # [B, K]
        normalised = candidates / length_penalty(candidate_lengths, alpha)[:, :, None]
        _, flat_choice = tf.math.top_k(tf.reshape(normalised, [batch_size, width * vocab_size]), k=width)  # [B, K]
        parent, next_tokens = flat_choice // vocab_size, flat_choice % vocab_size
        log_probs = tf.gather(tf.reshape(candidates, [batch_size, width * vocab_size]), flat_choice, batch_dims=1)
        lengths = tf.gather(candidate_lengths, parent, batch_dims=1)
        was_finished = tf.gather(finished, parent, batch_dims=1)
        finished = tf.logical_or(was_finished, tf.equal(next_tokens, end_id))
        sequences = tf.concat([tf.gather(sequences, parent, batch_dims=1), next_tokens[:, :, None]], axis=2)
        rows = tf.reshape(parent + tf.range(batch_size)[:, None] * width, [-1])  # rows of [B*K, …]
        # reorder what the hypotheses carry; per-sentence constants are the same in all its beams
        state = {key: value if key in constant_keys else tf.nest.map_structure(lambda t: tf.gather(t, rows), value)
                 for key, value in state.items()}
        if collect:
            entry = tf.cast(state[collect], tf.float32)
            entry = tf.reshape(entry, tf.concat([[batch_size, width, 1], tf.shape(entry)[1:]], 0))
            history = tf.concat([tf.gather(history, parent, batch_dims=1), entry], axis=2)
        fed = tf.where(finished, end_id, next_tokens)
        return step + 1, tf.reshape(fed, [-1]), log_probs, finished, lengths, sequences, state, history

    invariants = (
        tf.TensorShape([]), tf.TensorShape([None]), tf.TensorShape([None, width]),
        tf.TensorShape([None, width]), tf.TensorShape([None, width]), tf.TensorShape([None, width, None]),
        _batch_major_shapes(state),
        tf.TensorShape([None, width, None]).concatenate(state[collect].shape[1:]) if collect else tf.TensorShape([0]),
    )
    _, _, log_probs, _, lengths, sequences, _, history = tf.while_loop(
        keep_going, body, initial, shape_invariants=invariants
    )
    best = tf.argmax(log_probs / length_penalty(lengths, alpha), axis=1, output_type=tf.int32)  # [B]
    return SearchResult(
        tf.gather(sequences, best, batch_dims=1),
        tf.gather(lengths, best, batch_dims=1),
        tf.gather(log_probs, best, batch_dims=1),
        tf.gather(history, best, batch_dims=1) if collect else None,
    )
