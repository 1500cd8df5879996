"""In-graph, batched decoding over a step function `step_fn(tokens, state) -> (logits, state)`.

Core TensorFlow ops only (a `tf.while_loop`), so the search exports into a SavedModel that
stock TensorFlow Serving runs; no model is needed to test it (drive it with a fake step).

Finished sentences leave the batch: the step function runs only on the rows still decoding,
so a batch costs about the sum of its output lengths, not batch size × its longest output
(with 64 short Bible verses the longest greedy output is ~3× the mean). Every state entry
must therefore be batch-major (first axis = the rows). `fixed_length_greedy_search` and
`fixed_shape_beam_search` keep all rows and static shapes instead, for XLA and TPUs: the same
results, at the cost of stepping ended sentences until the batch's last one ends.

Each search's loop state is a NamedTuple (`GreedyState`, `FixedLengthState`, `BeamState`,
`FixedShapeBeamState`), run by `_decode_loop`. Both beam searches step through one `BeamStep`
(start, expand K hypotheses to the next K, pick the best); they differ only in what they keep
between steps. Beam search lays a sentence's K hypotheses out in
consecutive rows of the model's state (`[n·K, …]`) and keeps its own bookkeeping as
`[batch, K, …]`; `_split_beams`, `_merge_beams`, `_flat_rows` and `_hypothesis_rows` convert
between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import tensorflow as tf

from app.special_tokens import END_ID, PAD_ID, START_ID

StepFunction = Callable[[tf.Tensor, dict], tuple[tf.Tensor, dict]]


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


# === The loop scaffold ===


def _decode_loop(body, initial: NamedTuple, max_lengths: tf.Tensor, decoding, shape_invariants=None):
    """Runs `body(state) -> state` over a NamedTuple loop state with a `step` field while
    `decoding(state)` holds, for at most the longest limit and at least one step, so that an
    empty batch still gives `[batch, 1]` tokens. Returns the final state."""
    max_steps = tf.maximum(tf.reduce_max(max_lengths), 1)

    def keep_going(state):
        return tf.logical_and(state.step < max_steps, tf.logical_or(state.step == 0, decoding(state)))

    # a 1-tuple, so that the loop hands the NamedTuple itself to `keep_going` and `body`
    invariants = None if shape_invariants is None else (shape_invariants,)
    (final,) = tf.while_loop(
        keep_going, lambda state: (body(state),), (initial,), shape_invariants=invariants
    )
    return final


def _rows_left(state: NamedTuple) -> tf.Tensor:
    """Whether any row is still decoding: the size of the fed `tokens`, not of `rows` or
    `sentences`, since grappler folds the size of a loop variable like those to its initial one."""
    return tf.shape(state.tokens)[0] > 0


def _batch_major_shapes(state: dict):
    """While-loop shape invariants: every state entry keeps its shape except the batch axis."""
    return tf.nest.map_structure(lambda tensor: tf.TensorShape([None]).concatenate(tensor.shape[1:]), state)


def _gather_rows(state: dict, rows: tf.Tensor) -> dict:
    return tf.nest.map_structure(lambda tensor: tf.gather(tensor, rows), state)


def _scatter_rows(rows: tf.Tensor, values: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
    """`values [n, …]` of rows `rows` into zeros `[batch_size, …]`."""
    return tf.scatter_nd(rows[:, None], values, tf.concat([[batch_size], tf.shape(values)[1:]], 0))


def _batch_first(stacked: tf.Tensor) -> tf.Tensor:
    """`[steps, batch, …]` (a stacked TensorArray) → `[batch, steps, …]`."""
    return tf.transpose(stacked, [1, 0, *range(2, len(stacked.shape))])


# === Greedy search ===


class GreedyState(NamedTuple):
    """`greedy_search`'s loop state: `n` rows still decoding, `batch` sentences in all."""

    step: tf.Tensor  # [] the step being decoded
    rows: tf.Tensor  # [n] each decoding row's sentence
    tokens: tf.Tensor  # [n] the tokens fed at this step
    limits: tf.Tensor  # [n] each decoding row's output limit
    model_state: dict  # the step function's state, entries [n, …]
    scores: tf.Tensor  # [batch] sums of token log-probabilities
    lengths: tf.Tensor  # [batch] tokens so far, end id included
    token_steps: tf.TensorArray  # [step] × [batch] the chosen tokens, 0 for rows gone
    collected_steps: (
        tf.TensorArray | tf.Tensor
    )  # [step] × [batch, …] collected entries; [0] without `collect`


def _greedy_choice(logits: tf.Tensor, step: tf.Tensor, limits: tf.Tensor, end_id: int):
    """The most likely token per row (the end id at the row's limit) and its log-probability."""
    log_probs = tf.nn.log_softmax(logits)  # one fused op: cheaper on the CPU than a logsumexp
    next_tokens = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    next_tokens = tf.where(step >= limits - 1, end_id, next_tokens)  # forced end at the limit
    return next_tokens, tf.gather(log_probs, next_tokens, batch_dims=1)


ChooseFunction = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, int], tuple[tf.Tensor, tf.Tensor]]
# `constrain(scores [n, V], step, model_state) -> scores`: the tokens a row may not take at `step` set
# to -inf (`model_state`'s rows are the scores' rows); e.g. a prefix to force (`app.models.decoding`)
TokenConstraint = Callable[[tf.Tensor, tf.Tensor, dict], tf.Tensor]


def sampling_choice(seed: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor) -> ChooseFunction:
    """A `greedy_search` choice that draws each token instead of taking the likeliest: from
    softmax(logits / `temperature`), over the `top_k` likeliest tokens (0: all of them), with
    `tf.random.stateless_categorical` seeded by (`seed`, step), so the same seed and batch give the
    same draws. The log-probability it returns is the model's (temperature 1, whole distribution),
    like the greedy score. `seed` int64 `[]`, `temperature` float32 `[]` (> 0), `top_k` int32 `[]`."""

    def choose(logits: tf.Tensor, step: tf.Tensor, limits: tf.Tensor, end_id: int):
        log_probs = tf.nn.log_softmax(logits)  # [n, vocab]
        scaled = logits / tf.cast(temperature, logits.dtype)
        scaled = tf.cond(top_k > 0, lambda: _keep_top_k(scaled, top_k), lambda: scaled)
        step_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
        drawn = tf.random.stateless_categorical(scaled, 1, seed=step_seed, dtype=tf.int32)[:, 0]  # [n]
        next_tokens = tf.where(step >= limits - 1, end_id, drawn)  # forced end at the limit
        return next_tokens, tf.gather(log_probs, next_tokens, batch_dims=1)

    return choose


def _keep_top_k(logits: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """`logits [n, vocab]` with every value below each row's k-th largest set to -inf (ties kept)."""
    k = tf.minimum(k, tf.shape(logits)[-1])
    kth = tf.math.top_k(logits, k, sorted=True).values[:, -1:]  # [n, 1]
    return tf.where(logits < kth, tf.constant(-float("inf"), logits.dtype), logits)


def greedy_search(
    step_fn: StepFunction,
    state: dict,
    max_lengths: tf.Tensor,
    start_id: int = START_ID,
    end_id: int = END_ID,
    collect: str | None = None,
    choose: ChooseFunction = _greedy_choice,
    constrain: TokenConstraint | None = None,
) -> SearchResult:
    """Picks the most likely token at each step until every sentence has ended or hit its limit.

    A sentence that reaches `max_lengths[i]` tokens without ending is ended there (its last
    token becomes `end_id`). A sentence leaves the batch at its end; the loop stops when none is left.
    `choose(logits, step, limits, end_id) -> (tokens, log-probabilities)` picks each row's next
    token (`sampling_choice` draws it instead). `constrain` (`TokenConstraint`) rules tokens out
    before the choice; scores stay the model's log-probabilities over the whole vocabulary.
    """
    batch_size = tf.shape(max_lengths)[0]

    def body(loop: GreedyState) -> GreedyState:
        logits, model_state = step_fn(loop.tokens, loop.model_state)
        if constrain is None:
            next_tokens, token_scores = choose(logits, loop.step, loop.limits, end_id)  # [n], [n]
        else:  # chosen among the allowed tokens, scored by the model as it is
            next_tokens, _ = choose(constrain(logits, loop.step, model_state), loop.step, loop.limits, end_id)
            token_scores = tf.gather(tf.nn.log_softmax(logits), next_tokens, batch_dims=1)
        scores = tf.tensor_scatter_nd_add(loop.scores, loop.rows[:, None], token_scores)
        lengths = tf.tensor_scatter_nd_add(loop.lengths, loop.rows[:, None], tf.ones_like(loop.rows))
        token_steps = loop.token_steps.write(loop.step, _scatter_rows(loop.rows, next_tokens, batch_size))
        collected_steps = loop.collected_steps
        if collect:
            entry = _scatter_rows(loop.rows, tf.cast(model_state[collect], tf.float32), batch_size)
            collected_steps = collected_steps.write(loop.step, entry)
        decoding = tf.not_equal(next_tokens, end_id)  # [n]

        def drop_ended():
            keep = tf.where(decoding)[:, 0]
            return (
                tf.gather(loop.rows, keep),
                tf.gather(next_tokens, keep),
                tf.gather(loop.limits, keep),
                _gather_rows(model_state, keep),
            )

        rows, tokens, limits, model_state = tf.cond(
            tf.reduce_all(decoding), lambda: (loop.rows, next_tokens, loop.limits, model_state), drop_ended
        )
        return GreedyState(
            loop.step + 1, rows, tokens, limits, model_state, scores, lengths, token_steps, collected_steps
        )

    initial = GreedyState(
        step=tf.constant(0),
        rows=tf.range(batch_size),
        tokens=tf.fill([batch_size], tf.constant(start_id, tf.int32)),
        limits=max_lengths,
        model_state=state,
        scores=tf.zeros([batch_size], tf.float32),
        lengths=tf.zeros([batch_size], tf.int32),
        token_steps=tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None]),
        collected_steps=tf.TensorArray(tf.float32, size=0, dynamic_size=True) if collect else tf.zeros([0]),
    )
    invariants = GreedyState(
        step=tf.TensorShape([]),
        rows=tf.TensorShape([None]),
        tokens=tf.TensorShape([None]),
        limits=tf.TensorShape([None]),
        model_state=_batch_major_shapes(state),
        scores=tf.TensorShape([None]),
        lengths=tf.TensorShape([None]),
        token_steps=tf.TensorShape(None),
        collected_steps=tf.TensorShape(None) if collect else tf.TensorShape([0]),
    )
    final = _decode_loop(body, initial, max_lengths, _rows_left, invariants)
    tokens = _batch_first(final.token_steps.stack())
    collected = _batch_first(final.collected_steps.stack()) if collect else None
    return SearchResult(tokens, final.lengths, final.scores, collected)


class FixedLengthState(NamedTuple):
    """`fixed_length_greedy_search`'s loop state: every row steps, so all shapes are static."""

    step: tf.Tensor  # [] the step being decoded
    tokens: tf.Tensor  # [batch] the tokens fed at this step (padding once a sentence has ended)
    finished: tf.Tensor  # [batch] whether each sentence has ended
    scores: tf.Tensor  # [batch] sums of token log-probabilities
    lengths: tf.Tensor  # [batch] tokens so far, end id included
    model_state: dict  # the step function's state, entries [batch, …]
    outputs: tf.Tensor  # [batch, output_length] the chosen tokens, 0 after each end


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

    def body(loop: FixedLengthState) -> FixedLengthState:
        logits, model_state = step_fn(loop.tokens, loop.model_state)
        next_tokens, token_scores = _greedy_choice(logits, loop.step, max_lengths, end_id)  # [batch], [batch]
        scores = loop.scores + tf.where(loop.finished, 0.0, token_scores)
        lengths = loop.lengths + tf.cast(tf.logical_not(loop.finished), tf.int32)
        next_tokens = tf.where(loop.finished, PAD_ID, next_tokens)
        finished = tf.logical_or(loop.finished, tf.equal(next_tokens, end_id))
        column = tf.one_hot(loop.step, output_length, dtype=tf.int32)  # write column `step` of the buffer
        outputs = loop.outputs + column[None, :] * next_tokens[:, None]
        return FixedLengthState(loop.step + 1, next_tokens, finished, scores, lengths, model_state, outputs)

    initial = FixedLengthState(
        step=tf.constant(0),
        tokens=tf.fill([batch_size], tf.constant(start_id, tf.int32)),
        finished=tf.zeros([batch_size], tf.bool),
        scores=tf.zeros([batch_size], tf.float32),
        lengths=tf.zeros([batch_size], tf.int32),
        model_state=state,
        outputs=tf.zeros([batch_size, output_length], tf.int32),
    )
    final = _decode_loop(
        body, initial, max_lengths, lambda loop: tf.logical_not(tf.reduce_all(loop.finished))
    )
    return SearchResult(final.outputs, final.lengths, final.scores, None)


# === Beam search ===


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
    # -inf: below every value, also below tokens a constraint has ruled out (never picked over them)
    padded = tf.pad(values, [[0, 0], [0, blocks * block - size]], constant_values=-float("inf"))
    grouped = tf.reshape(padded, [rows, blocks, block])
    _, best_blocks = tf.math.top_k(tf.reduce_max(grouped, axis=-1), k=k)  # [rows, k]
    candidates = tf.reshape(tf.gather(grouped, best_blocks, batch_dims=1), [rows, k * block])
    best, position = tf.math.top_k(candidates, k=k)
    return best, tf.gather(best_blocks, position // block, batch_dims=1) * block + position % block


def _tile_beams(tensor: tf.Tensor, beam_width: int) -> tf.Tensor:
    """[batch, …] → [batch * beam, …], each row repeated beam_width times in a row."""
    return tf.repeat(tensor, beam_width, axis=0)


def _split_beams(tensor: tf.Tensor, width: int) -> tf.Tensor:
    """[n·K, …] → [n, K, …]: rows i·K to i·K + K − 1 are sentence i's K hypotheses. The size is
    read from `tensor` itself, which must not be a loop variable (see `_rows_left`)."""
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[shape[0] // width, width], shape[1:]], 0))


def _merge_beams(tensor: tf.Tensor) -> tf.Tensor:
    """[n, K, …] → [n·K, …], the inverse of `_split_beams`. No trailing axis may be empty."""
    return tf.reshape(tensor, tf.concat([[-1], tf.shape(tensor)[2:]], 0))


def _flat_rows(beams: tf.Tensor, width: int) -> tf.Tensor:
    """`beams [n, K]`, a beam of each sentence per hypothesis → `[n·K]` those beams' rows in the
    `[n·K, …]` layout: row i·K + beams[i, k]."""
    sentence_offsets = tf.range(tf.shape(beams)[0])[:, None] * width  # [n, 1]
    return _merge_beams(beams + sentence_offsets)


def _hypothesis_rows(sentences: tf.Tensor, width: int) -> tf.Tensor:
    """`sentences [m]`, indices into the `n` decoding ones → `[m·K]` the rows of all their hypotheses."""
    return _merge_beams(sentences[:, None] * width + tf.range(width)[None, :])


def _flatten_candidates(candidates: tf.Tensor, width: int) -> tf.Tensor:
    """[n, K, K] → [n, K·K]: candidate c is hypothesis c // K's extension c % K."""
    return tf.reshape(candidates, [-1, width * width])


def _beam_candidates(
    step_log_probs: tf.Tensor, finished: tf.Tensor, at_limit: tf.Tensor, width: int, end_id: int
):
    """Each hypothesis's K candidate extensions: `(log-probabilities, tokens)`, both `[n, K, K]`,
    from `step_log_probs [n·K, V]` and the hypotheses' `finished` and `at_limit`, both `[n, K, 1]`.

    A sentence's next beam is among each hypothesis's own K best tokens (its score is its
    log-probability plus a per-hypothesis constant, over a per-hypothesis penalty), so the
    K·V candidates shrink to K·K before anything else is computed on them.
    """
    token_log_probs, top_tokens = top_k(step_log_probs, width)  # [n·K, K]
    token_log_probs = _split_beams(token_log_probs, width)  # [n, K, K]
    top_tokens = _split_beams(top_tokens, width)  # [n, K, K]
    end_log_probs = _split_beams(step_log_probs[:, end_id : end_id + 1], width)  # [n, K, 1]
    only_first = tf.one_hot(0, width, on_value=0.0, off_value=-1e9)  # [K] one candidate per hypothesis
    # at its limit a hypothesis may only end (scored, like greedy's forced end, by the model)
    token_log_probs = tf.where(at_limit, end_log_probs + only_first, token_log_probs)
    top_tokens = tf.where(at_limit, end_id, top_tokens)
    # an ended hypothesis extends by padding only, at no cost
    token_log_probs = tf.where(finished, only_first, token_log_probs)
    top_tokens = tf.where(finished, PAD_ID, top_tokens)
    return token_log_probs, top_tokens


def _best_candidates(normalised: tf.Tensor, tokens: tf.Tensor, log_probs: tf.Tensor, width: int):
    """A sentence's next K hypotheses, its K best candidates by `normalised` score (all three
    `[n, K, K]`): their parent beams, tokens and log-probabilities, each `[n, K]`."""
    _, flat_choice = tf.math.top_k(_flatten_candidates(normalised, width), k=width)  # [n, K]
    parent = flat_choice // width
    next_tokens = tf.gather(_flatten_candidates(tokens, width), flat_choice, batch_dims=1)
    chosen_log_probs = tf.gather(_flatten_candidates(log_probs, width), flat_choice, batch_dims=1)
    return parent, next_tokens, chosen_log_probs


def _settled(hypotheses: Hypotheses, limits: tf.Tensor, alpha: float) -> tf.Tensor:
    """`[n]` whether each sentence's best ended hypothesis already beats all that its live ones can
    still become, so that stepping on cannot change its best translation (`limits [n, K]`).

    A live hypothesis's log-probability only falls as it grows, and with alpha ≥ 0 its length
    penalty only rises, up to its value at the sentence's limit: whatever it ends as scores at most
    log P / length_penalty(limit). So the search may stop a sentence once its best ended score is
    strictly above that bound for every live hypothesis: the same best hypothesis, fewer steps.
    """
    log_probs, finished, lengths = hypotheses
    normalised = log_probs / length_penalty(lengths, alpha)
    best_ended = tf.reduce_max(tf.where(finished, normalised, -float("inf")), axis=1)
    live_bound = log_probs / length_penalty(limits, alpha)
    best_live = tf.reduce_max(tf.where(finished, -float("inf"), live_bound), axis=1)
    return best_ended > best_live


class Hypotheses(NamedTuple):
    """A beam's bookkeeping, `[n, K]` each: `n` sentences, K hypotheses per sentence."""

    log_probs: tf.Tensor  # each hypothesis's log-probability
    finished: tf.Tensor  # whether it has ended
    lengths: tf.Tensor  # its tokens so far, end id included


class Expansion(NamedTuple):
    """One beam step for `n` sentences: their new hypotheses and what the loop carries on with."""

    hypotheses: Hypotheses  # [n, K] each
    parents: tf.Tensor  # [n, K] each new hypothesis's beam of origin
    tokens: tf.Tensor  # [n, K] the token each one appended (padding after its end)
    fed: tf.Tensor  # [n·K] the tokens to feed at the next step (the end id once ended)
    model_state: dict  # [n·K, …] the step function's state, reordered to follow the parents


@dataclass(frozen=True)
class BeamStep:
    """The beam expansion both beam searches share (the shape of keras-hub's `BeamSampler` and
    OpenNMT-tf's `BeamSearch.step`): a beam's start, one step from K hypotheses to the next K per
    sentence, and the best at the end. The loops around it differ only in what they keep: the
    dynamic one drops settled sentences, the fixed-shape one writes into a static buffer.

    `constant_keys` name state entries that steps never change (encoder outputs): tiled once and
    never reordered."""

    width: int
    alpha: float
    start_id: int
    end_id: int
    constant_keys: tuple[str, ...]

    def start(self, state: dict, max_lengths: tf.Tensor):
        """`(model_state [batch·K, …], limits [batch, K], hypotheses [batch, K], tokens [batch·K])`:
        each sentence's K rows tiled from its one, only beam 0 live (so that the first expansion
        does not pick the same token K times)."""
        batch_size = tf.shape(max_lengths)[0]
        model_state = tf.nest.map_structure(lambda tensor: _tile_beams(tensor, self.width), state)
        limits = _split_beams(_tile_beams(max_lengths, self.width), self.width)
        first = tf.concat([[0.0], tf.fill([self.width - 1], -1e9)], 0)
        hypotheses = Hypotheses(
            log_probs=tf.tile(first[None, :], [batch_size, 1]),
            finished=tf.zeros([batch_size, self.width], tf.bool),
            lengths=tf.zeros([batch_size, self.width], tf.int32),
        )
        return model_state, limits, hypotheses, tf.fill([batch_size * self.width], self.start_id)

    def expand(
        self,
        step_fn: StepFunction,
        tokens: tf.Tensor,
        model_state: dict,
        hypotheses: Hypotheses,
        limits: tf.Tensor,
        step: tf.Tensor,
        constrain: TokenConstraint | None = None,
    ) -> Expansion:
        """Runs `step_fn` on the `[n·K]` fed `tokens` and keeps each sentence's K best extensions of
        its `hypotheses` by length-normalised score; `limits [n, K]`, `step` the step decoded;
        `constrain` rules tokens out first. Sizes come from the logits (via `_split_beams`), never
        from the caller's indices."""
        width, end_id = self.width, self.end_id
        logits, model_state = step_fn(tokens, model_state)
        at_limit = step >= limits - 1  # [n, K]
        step_log_probs = tf.nn.log_softmax(logits)
        if constrain is not None:
            step_log_probs = constrain(step_log_probs, step, model_state)
        token_log_probs, top_tokens = _beam_candidates(
            step_log_probs, hypotheses.finished[:, :, None], at_limit[:, :, None], width, end_id
        )
        candidates = hypotheses.log_probs[:, :, None] + token_log_probs  # [n, K, K]
        candidate_lengths = hypotheses.lengths + tf.cast(tf.logical_not(hypotheses.finished), tf.int32)
        normalised = candidates / length_penalty(candidate_lengths, self.alpha)[:, :, None]
        parents, next_tokens, log_probs = _best_candidates(normalised, top_tokens, candidates, width)
        finished = tf.logical_or(
            tf.gather(hypotheses.finished, parents, batch_dims=1), tf.equal(next_tokens, end_id)
        )  # [n, K]
        lengths = tf.gather(candidate_lengths, parents, batch_dims=1)  # [n, K]
        # reorder what the hypotheses carry; per-sentence constants are the same in all its beams
        rows = _flat_rows(parents, width)  # [n·K]
        model_state = {
            key: value if key in self.constant_keys else _gather_rows(value, rows)
            for key, value in model_state.items()
        }
        fed = _merge_beams(tf.where(finished, end_id, next_tokens))  # [n·K]
        return Expansion(Hypotheses(log_probs, finished, lengths), parents, next_tokens, fed, model_state)

    def ranked(self, hypotheses: Hypotheses) -> tf.Tensor:
        """`[batch, K]` what ranks the hypotheses: log P / length_penalty(length, alpha)."""
        return hypotheses.log_probs / length_penalty(hypotheses.lengths, self.alpha)

    def best(self, hypotheses: Hypotheses) -> tf.Tensor:
        """`[batch]` each sentence's best hypothesis."""
        return tf.argmax(self.ranked(hypotheses), axis=1, output_type=tf.int32)


def _any_hypothesis_live(loop: NamedTuple) -> tf.Tensor:
    """Whether a hypothesis of the fixed-shape beam has not ended yet."""
    return tf.logical_not(tf.reduce_all(loop.hypotheses.finished))


class BeamState(NamedTuple):
    """`beam_search`'s loop state: `n` sentences still decoding, `batch` in all, K hypotheses each.
    Per-sentence bookkeeping stays full-size; the model's state and fed tokens hold only the
    decoding sentences' rows."""

    step: tf.Tensor  # [] the step being decoded
    sentences: tf.Tensor  # [n] the sentences still decoding
    tokens: tf.Tensor  # [n·K] each of their hypotheses' token fed at this step
    model_state: dict  # the step function's state, entries [n·K, …]
    hypotheses: Hypotheses  # [batch, K] each
    sequences: tf.Tensor  # [batch, K, step] each hypothesis's tokens
    history: tf.Tensor  # [batch, K, step, …] collected entries; [0] without `collect`


def _beam_loop(
    step_fn: StepFunction,
    state: dict,
    max_lengths: tf.Tensor,
    beam: BeamStep,
    *,
    collect: str | None,
    stop_when_settled: bool,
    constrain: TokenConstraint | None = None,
) -> BeamState:
    """The loop of `beam_search` (see there); returns its final state, every sentence's beam.
    With `stop_when_settled` a sentence also leaves once its best hypothesis is settled (`_settled`);
    its live hypotheses stay unfinished in its beam."""
    stop_when_settled = stop_when_settled and beam.alpha >= 0  # the bound needs a non-decreasing penalty
    batch_size = tf.shape(max_lengths)[0]
    width = beam.width
    state, beam_limits, hypotheses, tokens = beam.start(state, max_lengths)

    def body(loop: BeamState) -> BeamState:
        sentences = loop.sentences
        limits = tf.gather(beam_limits, sentences)  # [n, K]
        active = tf.nest.map_structure(lambda field: tf.gather(field, sentences), loop.hypotheses)
        expansion = beam.expand(step_fn, loop.tokens, loop.model_state, active, limits, loop.step, constrain)
        at = sentences[:, None]
        hypotheses = tf.nest.map_structure(
            lambda full, new: tf.tensor_scatter_nd_update(full, at, new),
            loop.hypotheses,
            expansion.hypotheses,
        )  # [batch, K] each
        # sentences no longer decoding keep their hypotheses in place and extend by padding
        parents = tf.tensor_scatter_nd_update(
            tf.tile(tf.range(width)[None, :], [batch_size, 1]), at, expansion.parents
        )  # [batch, K]
        appended = tf.scatter_nd(at, expansion.tokens, [batch_size, width])[:, :, None]  # [batch, K, 1]
        sequences = tf.concat([tf.gather(loop.sequences, parents, batch_dims=1), appended], axis=2)
        model_state = expansion.model_state
        history = loop.history
        if collect:
            entry = _split_beams(tf.cast(model_state[collect], tf.float32), width)[:, :, None]  # [n, K, 1, …]
            full = _scatter_rows(sentences, entry, batch_size)  # [batch, K, 1, …]
            history = tf.concat([tf.gather(history, parents, batch_dims=1), full], axis=2)
        fed = expansion.fed
        decoding = tf.logical_not(tf.reduce_all(expansion.hypotheses.finished, axis=1))  # [n]
        if stop_when_settled:
            settled = _settled(expansion.hypotheses, limits, beam.alpha)
            decoding = tf.logical_and(decoding, tf.logical_not(settled))

        def drop_ended():
            keep = tf.cast(tf.where(decoding)[:, 0], tf.int32)
            keep_rows = _hypothesis_rows(keep, width)
            return tf.gather(sentences, keep), tf.gather(fed, keep_rows), _gather_rows(model_state, keep_rows)

        sentences, fed, model_state = tf.cond(
            tf.reduce_all(decoding), lambda: (sentences, fed, model_state), drop_ended
        )
        return BeamState(loop.step + 1, sentences, fed, model_state, hypotheses, sequences, history)

    if collect:  # [batch, beam, steps, *entry shape]
        entry_shape = tf.shape(state[collect])[1:]
        history = tf.zeros(tf.concat([[batch_size, width, 0], entry_shape], 0), tf.float32)
    else:
        history = tf.zeros([0])
    initial = BeamState(
        step=tf.constant(0),
        sentences=tf.range(batch_size),
        tokens=tokens,
        model_state=state,
        hypotheses=hypotheses,
        sequences=tf.zeros([batch_size, width, 0], tf.int32),
        history=history,
    )
    invariants = BeamState(
        step=tf.TensorShape([]),
        sentences=tf.TensorShape([None]),
        tokens=tf.TensorShape([None]),
        model_state=_batch_major_shapes(state),
        hypotheses=Hypotheses(*[tf.TensorShape([None, width])] * 3),
        sequences=tf.TensorShape([None, width, None]),
        history=tf.TensorShape([None, width, None]).concatenate(state[collect].shape[1:])
        if collect
        else tf.TensorShape([0]),
    )
    return _decode_loop(body, initial, max_lengths, _rows_left, invariants)


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
    constrain: TokenConstraint | None = None,
) -> SearchResult:
    """Batched beam search; every state entry must be batch-major (first axis = batch).

    `constant_keys` name state entries that steps never change (encoder outputs): they are
    tiled once and never reordered. `constrain` (`TokenConstraint`) rules tokens out of each
    hypothesis's extensions; scores stay the model's log-probabilities.

    Hypotheses compete by length-normalised score, log P / length_penalty(length, alpha).
    Ended hypotheses stay in the beam with their score frozen (they extend only by padding at
    no cost), so a finished short translation is kept unless longer ones beat it. A sentence's
    hypotheses are forced to end at `max_lengths`; a sentence leaves the batch once all its
    hypotheses have ended, or (alpha ≥ 0) once its best ended one outscores anything its live ones
    can still become (`_settled`: exact, the same best hypothesis as stepping on), and the loop
    stops when none is left.
    Returns the best hypothesis per sentence; `scores` are its log-probabilities. The
    vocabulary must have at least `beam_width` tokens.
    """
    beam = BeamStep(beam_width, alpha, start_id, end_id, tuple(constant_keys))
    final = _beam_loop(
        step_fn, state, max_lengths, beam, collect=collect, stop_when_settled=True, constrain=constrain
    )
    best = beam.best(final.hypotheses)  # [batch]
    return SearchResult(
        tf.gather(final.sequences, best, batch_dims=1),
        tf.gather(final.hypotheses.lengths, best, batch_dims=1),
        tf.gather(final.hypotheses.log_probs, best, batch_dims=1),
        tf.gather(final.history, best, batch_dims=1) if collect else None,
    )


# A hypothesis scored below this never was one: the search fills a beam with such placeholders
# (log-probability about -1e9) only where fewer than K hypotheses exist, e.g. when the output limit
# allows one token.
UNREACHABLE_LOG_PROB = -1e8


class NBestResult(NamedTuple):
    """The K hypotheses of each sentence's final beam, best first by length-normalised score:
    `tokens [batch, K, steps]` (0 after each end id), `lengths [batch, K]`, `scores [batch, K]`
    (sums of token log-probabilities; below `UNREACHABLE_LOG_PROB` for a placeholder) and
    `normalised_scores [batch, K]` (what ranks them: log P / length_penalty(length, alpha))."""

    tokens: tf.Tensor
    lengths: tf.Tensor
    scores: tf.Tensor
    normalised_scores: tf.Tensor


def beam_search_nbest(
    step_fn: StepFunction,
    state: dict,
    max_lengths: tf.Tensor,
    beam_width: int = 4,
    alpha: float = 0.6,
    start_id: int = START_ID,
    end_id: int = END_ID,
    constant_keys: tuple[str, ...] = (),
) -> NBestResult:
    """`beam_search`, returning all K hypotheses of each final beam (distinct token sequences: the
    beam never holds one path twice) sorted by the score that ranks them; the first of each is
    `beam_search`'s."""
    beam = BeamStep(beam_width, alpha, start_id, end_id, tuple(constant_keys))
    # every hypothesis must end: the n-best list is the whole final beam, not only its best
    final = _beam_loop(step_fn, state, max_lengths, beam, collect=None, stop_when_settled=False)
    ranked, order = tf.math.top_k(
        beam.ranked(final.hypotheses), k=beam_width
    )  # best first; ties keep beam order
    return NBestResult(
        tf.gather(final.sequences, order, batch_dims=1),
        tf.gather(final.hypotheses.lengths, order, batch_dims=1),
        tf.gather(final.hypotheses.log_probs, order, batch_dims=1),
        ranked,
    )


class FixedShapeBeamState(NamedTuple):
    """`fixed_shape_beam_search`'s loop state: every sentence's K hypotheses step until all have
    ended, so all shapes are static."""

    step: tf.Tensor  # [] the step being decoded
    tokens: tf.Tensor  # [batch·K] each hypothesis's token fed at this step
    model_state: dict  # the step function's state, entries [batch·K, …]
    hypotheses: Hypotheses  # [batch, K] each
    sequences: tf.Tensor  # [batch, K, output_length] each hypothesis's tokens, 0 after its end


def fixed_shape_beam_search(
    step_fn: StepFunction,
    state: dict,
    max_lengths: tf.Tensor,
    output_length: int,
    beam_width: int = 4,
    alpha: float = 0.6,
    start_id: int = START_ID,
    end_id: int = END_ID,
    constant_keys: tuple[str, ...] = (),
) -> SearchResult:
    """`beam_search` with static shapes, what XLA needs: no sentence leaves the batch (an ended
    one keeps its hypotheses, extended by padding at no cost) and tokens are written into a
    `[batch, K, output_length]` buffer (limits are capped to it). The same best hypotheses,
    lengths and scores as `beam_search`; nothing is collected."""
    beam = BeamStep(beam_width, alpha, start_id, end_id, tuple(constant_keys))
    batch_size = tf.shape(max_lengths)[0]
    max_lengths = tf.minimum(max_lengths, output_length)
    state, beam_limits, hypotheses, tokens = beam.start(state, max_lengths)

    def body(loop: FixedShapeBeamState) -> FixedShapeBeamState:
        expansion = beam.expand(
            step_fn, loop.tokens, loop.model_state, loop.hypotheses, beam_limits, loop.step
        )
        column = tf.one_hot(loop.step, output_length, dtype=tf.int32)  # write column `step` of the buffer
        sequences = (
            tf.gather(loop.sequences, expansion.parents, batch_dims=1) + column * expansion.tokens[:, :, None]
        )
        return FixedShapeBeamState(
            loop.step + 1, expansion.fed, expansion.model_state, expansion.hypotheses, sequences
        )

    initial = FixedShapeBeamState(
        step=tf.constant(0),
        tokens=tokens,
        model_state=state,
        hypotheses=hypotheses,
        sequences=tf.zeros([batch_size, beam_width, output_length], tf.int32),
    )
    final = _decode_loop(body, initial, max_lengths, _any_hypothesis_live)
    best = beam.best(final.hypotheses)  # [batch]
    return SearchResult(
        tf.gather(final.sequences, best, batch_dims=1),
        tf.gather(final.hypotheses.lengths, best, batch_dims=1),
        tf.gather(final.hypotheses.log_probs, best, batch_dims=1),
        None,
    )
