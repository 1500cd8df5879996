"""In-graph, batched decoding over a step function `step_fn(tokens, state) -> (logits, state)`.

Core TensorFlow ops only (a `tf.while_loop`), so the search exports into a SavedModel that
stock TensorFlow Serving runs; no model is needed to test it (drive it with a fake step).

Finished sentences leave the batch: the step function runs only on the rows still decoding,
so a batch costs about the sum of its output lengths, not batch size × its longest output
(with 64 short Bible verses the longest greedy output is ~3× the mean). Every state entry
must therefore be batch-major (first axis = the rows). `fixed_length_greedy_search` keeps all
rows and static shapes instead, for XLA and TPUs.
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


def _gather_rows(state: dict, rows: tf.Tensor) -> dict:
    return tf.nest.map_structure(lambda tensor: tf.gather(tensor, rows), state)


def _scatter_rows(rows: tf.Tensor, values: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
    """`values [n, …]` of rows `rows` into zeros `[batch_size, …]`."""
    return tf.scatter_nd(rows[:, None], values, tf.concat([[batch_size], tf.shape(values)[1:]], 0))


def _greedy_choice(logits: tf.Tensor, step: tf.Tensor, limits: tf.Tensor, end_id: int):
    """The most likely token per row (the end id at the row's limit) and its log-probability."""
    log_probs = tf.nn.log_softmax(logits)  # one fused op: cheaper on the CPU than a logsumexp
    next_tokens = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    next_tokens = tf.where(step >= limits - 1, end_id, next_tokens)  # forced end at the limit
    return next_tokens, tf.gather(log_probs, next_tokens, batch_dims=1)


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
    token becomes `end_id`). A sentence leaves the batch at its end; the loop stops when none is left.
    """
    batch_size = tf.shape(max_lengths)[0]
    max_steps = tf.maximum(tf.reduce_max(max_lengths), 1)
    initial = (
        tf.constant(0),
        tf.range(batch_size),  # rows: each decoding row's sentence
        tf.fill([batch_size], tf.constant(start_id, tf.int32)),
        max_lengths,
        state,
        tf.zeros([batch_size], tf.float32),  # scores
        tf.zeros([batch_size], tf.int32),  # lengths
        tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None]),
        tf.TensorArray(tf.float32, size=0, dynamic_size=True) if collect else tf.zeros([0]),
    )

    def keep_going(step, rows, tokens, *_):
        # at least one step, so that an empty batch still gives [batch, 1]; the size of `tokens`,
        # not `rows`: grappler folds the size of a loop variable like `rows` to its initial one
        return tf.logical_and(step < max_steps, tf.logical_or(step == 0, tf.shape(tokens)[0] > 0))

    def body(step, rows, tokens, limits, state, scores, lengths, token_steps, collected_steps):
        logits, state = step_fn(tokens, state)
        next_tokens, token_scores = _greedy_choice(logits, step, limits, end_id)
        scores = tf.tensor_scatter_nd_add(scores, rows[:, None], token_scores)
        lengths = tf.tensor_scatter_nd_add(lengths, rows[:, None], tf.ones_like(rows))
        token_steps = token_steps.write(step, _scatter_rows(rows, next_tokens, batch_size))
        if collect:
            entry = _scatter_rows(rows, tf.cast(state[collect], tf.float32), batch_size)
            collected_steps = collected_steps.write(step, entry)
        decoding = tf.not_equal(next_tokens, end_id)

        def drop_ended():
            keep = tf.where(decoding)[:, 0]
            return (
                tf.gather(rows, keep),
                tf.gather(next_tokens, keep),
                tf.gather(limits, keep),
                _gather_rows(state, keep),
            )

        rows, tokens, limits, state = tf.cond(
            tf.reduce_all(decoding), lambda: (rows, next_tokens, limits, state), drop_ended
        )
        return step + 1, rows, tokens, limits, state, scores, lengths, token_steps, collected_steps

    invariants = (
        tf.TensorShape([]),
        tf.TensorShape([None]),
        tf.TensorShape([None]),
        tf.TensorShape([None]),
        _batch_major_shapes(state),
        tf.TensorShape([None]),
        tf.TensorShape([None]),
        tf.TensorShape(None),
        tf.TensorShape(None) if collect else tf.TensorShape([0]),
    )
    *_, scores, lengths, token_steps, collected_steps = tf.while_loop(
        keep_going, body, initial, shape_invariants=invariants
    )
    tokens = tf.transpose(token_steps.stack(), [1, 0])  # [steps, batch] -> [batch, steps]
    if not collect:
        return SearchResult(tokens, lengths, scores, None)
    collected = collected_steps.stack()  # [steps, batch, …]
    rank = len(collected.shape)
    return SearchResult(tokens, lengths, scores, tf.transpose(collected, [1, 0, *range(2, rank)]))


def fixed_length_greedy_search(
    step_fn: StepFunction,
    state: dict,
    max_lengths: tf.Tensor,
    output_length: int,
    start_id: int = START_ID,
    end_id: int = END_ID,
) -> SearchResult:
    """Greedy search with static shapes, what XLA and TPUs need: all rows step until every
    sentence has ended, and tokens come back as a `[batch, output_length]` buffer (limits are
    capped to it). The same tokens, lengths and scores as `greedy_search`."""
    batch_size = tf.shape(max_lengths)[0]
    max_lengths = tf.minimum(max_lengths, output_length)
    max_steps = tf.maximum(tf.reduce_max(max_lengths), 1)

    def keep_going(step, tokens, finished, scores, lengths, state, outputs):
        unfinished = tf.logical_or(step == 0, tf.logical_not(tf.reduce_all(finished)))
        return tf.logical_and(step < max_steps, unfinished)

    def body(step, tokens, finished, scores, lengths, state, outputs):
        logits, state = step_fn(tokens, state)
        next_tokens, token_scores = _greedy_choice(logits, step, max_lengths, end_id)
        scores += tf.where(finished, 0.0, token_scores)
        lengths += tf.cast(tf.logical_not(finished), tf.int32)
        next_tokens = tf.where(finished, PAD_ID, next_tokens)
        finished = tf.logical_or(finished, tf.equal(next_tokens, end_id))
        column = tf.one_hot(step, output_length, dtype=tf.int32)  # write column `step` of the buffer
        outputs += column[None, :] * next_tokens[:, None]
        return step + 1, next_tokens, finished, scores, lengths, state, outputs

    initial = (
        tf.constant(0),
        tf.fill([batch_size], tf.constant(start_id, tf.int32)),
        tf.zeros([batch_size], tf.bool),  # finished
        tf.zeros([batch_size], tf.float32),  # scores
        tf.zeros([batch_size], tf.int32),  # lengths
        state,
        tf.zeros([batch_size, output_length], tf.int32),
    )
    _, _, _, scores, lengths, _, outputs = tf.while_loop(keep_going, body, initial)
    return SearchResult(outputs, lengths, scores, None)


def length_penalty(lengths: tf.Tensor, alpha: float) -> tf.Tensor:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016); alpha = 0: by log-probability."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def top_k(values: tf.Tensor, k: int, block: int = 128) -> tuple[tf.Tensor, tf.Tensor]:
    """`tf.math.top_k(values, k)` over the last axis of `[rows, size]`, exactly, 3× faster on the
    CPU for a vocabulary-sized axis: the k best lie in the k blocks with the best maxima, so a
    max per block of `block` values, then a top-k over k blocks' values."""
    size = values.shape[-1]
    if size is None or size < k * block:
        return tf.math.top_k(values, k)
    rows, blocks = tf.shape(values)[0], -(-size // block)
    padded = tf.pad(values, [[0, 0], [0, blocks * block - size]], constant_values=values.dtype.min)
    grouped = tf.reshape(padded, [rows, blocks, block])
    _, best_blocks = tf.math.top_k(tf.reduce_max(grouped, axis=-1), k=k)  # [rows, k]
    candidates = tf.reshape(tf.gather(grouped, best_blocks, batch_dims=1), [rows, k * block])
    best, position = tf.math.top_k(candidates, k=k)
    return best, tf.gather(best_blocks, position // block, batch_dims=1) * block + position % block


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
    hypotheses are forced to end at `max_lengths`; a sentence leaves the batch once all its
    hypotheses have ended, and the loop stops when none is left.
    Returns the best hypothesis per sentence; `scores` are its log-probabilities. The
    vocabulary must have at least `beam_width` tokens.
    """
    batch_size = tf.shape(max_lengths)[0]
    width = beam_width
    state = tf.nest.map_structure(lambda tensor: _tile_beams(tensor, width), state)
    beam_limits = tf.reshape(_tile_beams(max_lengths, width), [batch_size, width])
    # only beam 0 is live at first, so the first expansion does not pick the same token K times
    log_probs = tf.tile(tf.concat([[0.0], tf.fill([width - 1], -1e9)], 0)[None, :], [batch_size, 1])
    if collect:  # [batch, beam, steps, *entry shape]
        entry_shape = tf.shape(state[collect])[1:]
        history = tf.zeros(tf.concat([[batch_size, width, 0], entry_shape], 0), tf.float32)
    else:
        history = tf.zeros([0])
    # Per-sentence bookkeeping stays full-size [batch, beam, …]; the model's state and fed
    # tokens hold only the rows of the sentences still decoding (`sentences`).
    initial = (
        tf.constant(0),
        tf.range(batch_size),  # sentences still decoding
        tf.fill([batch_size * width], tf.constant(start_id, tf.int32)),
        state,
        log_probs,
        tf.zeros([batch_size, width], tf.bool),  # finished
        tf.zeros([batch_size, width], tf.int32),  # lengths
        tf.zeros([batch_size, width, 0], tf.int32),  # sequences
        history,
    )
    max_steps = tf.maximum(tf.reduce_max(max_lengths), 1)
    beam_offsets = tf.range(width)

    def keep_going(step, sentences, tokens, *_):
        return tf.logical_and(step < max_steps, tf.logical_or(step == 0, tf.shape(tokens)[0] > 0))

    def body(step, sentences, tokens, state, log_probs, finished, lengths, sequences, history):
        logits, state = step_fn(tokens, state)
        # sizes from the logits, not `sentences`: grappler folds the loop variable's size to its initial one
        count = tf.shape(logits)[0] // width
        # A sentence's next beam is among each hypothesis's own K best tokens (its score is its
        # log-probability plus a per-hypothesis constant, over a per-hypothesis penalty), so the
        # K·V candidates shrink to K·K before anything else is computed on them.
        step_log_probs = tf.nn.log_softmax(logits)  # [n·K, V]
        token_log_probs, top_tokens = top_k(step_log_probs, width)  # [n·K, K]
        token_log_probs = tf.reshape(token_log_probs, [count, width, width])
        top_tokens = tf.reshape(top_tokens, [count, width, width])
        end_log_probs = tf.reshape(step_log_probs[:, end_id : end_id + 1], [count, width, 1])
        only_first = tf.one_hot(0, width, on_value=0.0, off_value=-1e9)  # one candidate per hypothesis
        active_finished = tf.gather(finished, sentences)[:, :, None]
        # at its limit a hypothesis may only end (scored, like greedy's forced end, by the model)
        at_limit = (step >= tf.gather(beam_limits, sentences) - 1)[:, :, None]
        token_log_probs = tf.where(at_limit, end_log_probs + only_first, token_log_probs)
        top_tokens = tf.where(at_limit, end_id, top_tokens)
        # an ended hypothesis extends by padding only, at no cost
        token_log_probs = tf.where(active_finished, only_first, token_log_probs)
        top_tokens = tf.where(active_finished, PAD_ID, top_tokens)
        candidates = tf.gather(log_probs, sentences)[:, :, None] + token_log_probs  # [n, K, K]
        candidate_lengths = tf.gather(lengths, sentences) + tf.cast(
            tf.logical_not(active_finished[:, :, 0]), tf.int32
        )
        normalised = candidates / length_penalty(candidate_lengths, alpha)[:, :, None]
        _, flat_choice = tf.math.top_k(tf.reshape(normalised, [count, width * width]), k=width)  # [n, K]
        parent = flat_choice // width
        next_tokens = tf.gather(tf.reshape(top_tokens, [count, width * width]), flat_choice, batch_dims=1)
        chosen_log_probs = tf.gather(
            tf.reshape(candidates, [count, width * width]), flat_choice, batch_dims=1
        )
        active_finished = active_finished[:, :, 0]
        now_finished = tf.logical_or(
            tf.gather(active_finished, parent, batch_dims=1), tf.equal(next_tokens, end_id)
        )
        at = sentences[:, None]
        log_probs = tf.tensor_scatter_nd_update(log_probs, at, chosen_log_probs)
        lengths = tf.tensor_scatter_nd_update(lengths, at, tf.gather(candidate_lengths, parent, batch_dims=1))
        finished = tf.tensor_scatter_nd_update(finished, at, now_finished)
        # sentences no longer decoding keep their hypotheses in place and extend by padding
        parents = tf.tensor_scatter_nd_update(tf.tile(beam_offsets[None, :], [batch_size, 1]), at, parent)
        appended = tf.scatter_nd(at, next_tokens, [batch_size, width])[:, :, None]
        sequences = tf.concat([tf.gather(sequences, parents, batch_dims=1), appended], axis=2)
        rows = tf.reshape(parent + tf.range(count)[:, None] * width, [-1])  # rows of [n*K, …]
        # reorder what the hypotheses carry; per-sentence constants are the same in all its beams
        state = {
            key: value if key in constant_keys else _gather_rows(value, rows) for key, value in state.items()
        }
        if collect:
            entry = tf.cast(state[collect], tf.float32)
            entry = tf.reshape(entry, tf.concat([[count, width, 1], tf.shape(entry)[1:]], 0))
            full = tf.scatter_nd(at, entry, tf.concat([[batch_size], tf.shape(entry)[1:]], 0))
            history = tf.concat([tf.gather(history, parents, batch_dims=1), full], axis=2)
        fed = tf.reshape(tf.where(now_finished, end_id, next_tokens), [-1])
        decoding = tf.logical_not(tf.reduce_all(now_finished, axis=1))  # [n]

        def drop_ended():
            keep = tf.cast(tf.where(decoding)[:, 0], tf.int32)
            keep_rows = tf.reshape(keep[:, None] * width + beam_offsets[None, :], [-1])
            return tf.gather(sentences, keep), tf.gather(fed, keep_rows), _gather_rows(state, keep_rows)

        sentences, fed, state = tf.cond(tf.reduce_all(decoding), lambda: (sentences, fed, state), drop_ended)
        return step + 1, sentences, fed, state, log_probs, finished, lengths, sequences, history

    invariants = (
        tf.TensorShape([]),
        tf.TensorShape([None]),
        tf.TensorShape([None]),
        _batch_major_shapes(state),
        tf.TensorShape([None, width]),
        tf.TensorShape([None, width]),
        tf.TensorShape([None, width]),
        tf.TensorShape([None, width, None]),
        tf.TensorShape([None, width, None]).concatenate(state[collect].shape[1:])
        if collect
        else tf.TensorShape([0]),
    )
    *_, log_probs, _, lengths, sequences, history = tf.while_loop(
        keep_going, body, initial, shape_invariants=invariants
    )
    best = tf.argmax(log_probs / length_penalty(lengths, alpha), axis=1, output_type=tf.int32)  # [B]
    return SearchResult(
        tf.gather(sequences, best, batch_dims=1),
        tf.gather(lengths, best, batch_dims=1),
        tf.gather(log_probs, best, batch_dims=1),
        tf.gather(history, best, batch_dims=1) if collect else None,
    )
