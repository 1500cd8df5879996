"""Decoding strategies: which search turns a step function into output tokens, decided once from
the decode settings and then run on every batch (the shape of OpenNMT-tf's
`DecodingStrategy.from_params` + `dynamic_decode`, and of keras-hub's `CausalLM.compile(sampler=…)`).

A strategy is Python used while tracing: the graph it builds holds core TensorFlow ops only, so a
SavedModel traced through one loads without this module. Every strategy runs over a step function
`step_fn(tokens, state) -> (logits, state)` (`app.models.search`) and knows nothing of models or
tokenizers; per-sentence inputs a strategy may need beyond the step function (`PrefixConstrained`'s
prefix to force) travel in `state`, batch-major like its other entries, and a call's scalars
(`SamplingSearch`'s seed, temperature and top-k) are the strategy's own fields, built inside the
traced function.

    strategy = DecodingStrategy.from_settings(beam_width=4, length_penalty_alpha=0.6)
    result = strategy.search(step_fn, state, max_lengths)  # SearchResult
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import tensorflow as tf

from app.models.search import (
    NBestResult,
    SearchResult,
    StepFunction,
    TokenConstraint,
    beam_search,
    beam_search_nbest,
    fixed_length_greedy_search,
    fixed_shape_beam_search,
    greedy_search,
    length_penalty,
    sampling_choice,
)
from app.special_tokens import PAD_ID

# `PrefixConstrained`'s state entries: `prefix [batch, P]` int32, the tokens to force (0-padded), and
# optionally `prefix_next [batch, V]` bool, the tokens allowed at the first step after them
PREFIX_KEYS = ("prefix", "prefix_next")


class DecodingStrategy(abc.ABC):
    """How a batch is decoded. `search` gives one translation per sentence; `nbest` a strategy's
    candidate translations per sentence, best first (by default its one translation).

    `name` groups strategies for settings keyed by kind (e.g. the translator's XLA batch limits);
    `static_shapes` strategies write into a fixed `[batch, output_length]` buffer, what XLA needs.
    """

    name: ClassVar[str]
    static_shapes: ClassVar[bool] = False
    length_penalty_alpha: float  # every strategy ranks its candidates by GNMT-normalised score

    @abc.abstractmethod
    def search(
        self, step_fn: StepFunction, state: dict, max_lengths: tf.Tensor, *, collect: str | None = None
    ) -> SearchResult:
        """Output tokens `[batch, steps]`, lengths and scores; `collect` names a state entry to keep
        per step (e.g. attention weights)."""

    def constrained_search(
        self,
        step_fn: StepFunction,
        state: dict,
        max_lengths: tf.Tensor,
        constrain: TokenConstraint,
        *,
        collect: str | None = None,
    ) -> SearchResult:
        """`search` with `constrain` ruling tokens out at each step (`PrefixConstrained`); the
        strategies that cannot take a constraint refuse."""
        raise ValueError(f"{type(self).__name__} cannot decode under a token constraint")

    @classmethod
    def from_settings(
        cls,
        beam_width: int,
        length_penalty_alpha: float,
        *,
        output_length: int | None = None,
        constant_keys: tuple[str, ...] = (),
        prefix: bool = False,
    ) -> DecodingStrategy:
        """The strategy for these decode settings: greedy at a beam width of 1, else beam search;
        with `output_length`, its static-shape variant (XLA, TPUs) writing into that many columns;
        with `prefix`, either forced through the prefix in its state first (`PrefixConstrained`)."""
        if beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {beam_width}")
        if prefix:
            if output_length is not None:
                raise ValueError("a prefix is forced by the dynamic searches only (no output_length)")
            inner = cls.from_settings(
                beam_width, length_penalty_alpha, constant_keys=(*constant_keys, *PREFIX_KEYS)
            )
            return PrefixConstrained(inner)
        if output_length is None:
            if beam_width == 1:
                return GreedySearch(length_penalty_alpha)
            return BeamSearch(beam_width, length_penalty_alpha, tuple(constant_keys))
        if beam_width == 1:
            return FixedLengthGreedySearch(length_penalty_alpha, output_length)
        return FixedShapeBeamSearch(beam_width, length_penalty_alpha, output_length, tuple(constant_keys))

    def nbest(self, step_fn: StepFunction, state: dict, max_lengths: tf.Tensor) -> NBestResult:
        """A list of one per sentence: the strategy's translation, ranked as a beam would rank it."""
        result = self.search(step_fn, state, max_lengths)
        lengths, scores = result.lengths[:, None], result.scores[:, None]
        normalised = scores / length_penalty(lengths, self.length_penalty_alpha)
        return NBestResult(result.tokens[:, None], lengths, scores, normalised)


@dataclass(frozen=True)
class GreedySearch(DecodingStrategy):
    """The most likely token at each step; ended sentences leave the batch (`greedy_search`)."""

    length_penalty_alpha: float  # ranks its one hypothesis in `nbest` only
    name: ClassVar[str] = "greedy"

    def search(self, step_fn, state, max_lengths, *, collect=None) -> SearchResult:
        return greedy_search(step_fn, state, max_lengths, collect=collect)

    def constrained_search(self, step_fn, state, max_lengths, constrain, *, collect=None) -> SearchResult:
        return greedy_search(step_fn, state, max_lengths, collect=collect, constrain=constrain)


@dataclass(frozen=True, eq=False)  # tensor fields: compared by identity
class SamplingSearch(DecodingStrategy):
    """Each token drawn from the model's distribution (`greedy_search` with `sampling_choice`):
    softmax(logits / `temperature`) over the `top_k` likeliest tokens (0 = all), seeded by `seed`.

    Its fields are tensors of one call (the `sample` signature's inputs), so it is built inside the
    traced function, per call, unlike the strategies `from_settings` chooses once. The same seed and
    batch give the same output; a sentence's draws depend on its row in the batch. As the
    temperature goes to 0 it becomes greedy search. Scores are the model's log-probabilities of the
    drawn tokens (temperature 1, whole distribution), comparable with greedy and beam scores.
    """

    temperature: tf.Tensor  # float32 [] > 0
    top_k: tf.Tensor  # int32 []; 0 = the whole distribution
    seed: tf.Tensor  # int64 []
    length_penalty_alpha: float = 0.0  # ranks its one hypothesis in `nbest` only
    name: ClassVar[str] = "sampling"

    def search(self, step_fn, state, max_lengths, *, collect=None) -> SearchResult:
        choose = sampling_choice(self.seed, self.temperature, self.top_k)
        return greedy_search(step_fn, state, max_lengths, collect=collect, choose=choose)


@dataclass(frozen=True)
class BeamSearch(DecodingStrategy):
    """K hypotheses per sentence by length-normalised score; a sentence leaves the batch once its
    best translation is settled (`beam_search`); `nbest` gives its whole final beam."""

    beam_width: int
    length_penalty_alpha: float
    constant_keys: tuple[str, ...] = ()  # state entries steps never change: tiled once, never reordered
    name: ClassVar[str] = "beam"

    def search(self, step_fn, state, max_lengths, *, collect=None) -> SearchResult:
        return self.constrained_search(step_fn, state, max_lengths, None, collect=collect)

    def constrained_search(self, step_fn, state, max_lengths, constrain, *, collect=None) -> SearchResult:
        return beam_search(
            step_fn,
            state,
            max_lengths,
            self.beam_width,
            self.length_penalty_alpha,
            collect=collect,
            constant_keys=self.constant_keys,
            constrain=constrain,
        )

    def nbest(self, step_fn, state, max_lengths) -> NBestResult:
        return beam_search_nbest(
            step_fn,
            state,
            max_lengths,
            self.beam_width,
            self.length_penalty_alpha,
            constant_keys=self.constant_keys,
        )


@dataclass(frozen=True)
class PrefixConstrained(DecodingStrategy):
    """`inner` (greedy or beam search) forced through a prefix first: while a sentence's step is
    inside its prefix, the prefix's token is the only one allowed (in beam search, every hypothesis
    keeps to it, so the beam holds the one forced path until the prefix ends); at the first step
    after it, only the tokens of `prefix_next` where given (token healing: pieces that complete a
    backed-off partial one); then `inner` searches freely. The prefixes travel in the state
    (`PREFIX_KEYS`), so sentences of a batch force prefixes of different lengths, and an empty
    prefix decodes exactly as `inner`. Scores are the model's log-probabilities of the whole
    output, the forced tokens included. The caller keeps each sentence's output limit past its
    prefix: at its limit a sentence ends whatever it was forced to take."""

    inner: DecodingStrategy
    name: ClassVar[str] = "prefix"

    @property
    def length_penalty_alpha(self) -> float:  # type: ignore[override]
        return self.inner.length_penalty_alpha

    def search(self, step_fn, state, max_lengths, *, collect=None) -> SearchResult:
        return self.inner.constrained_search(step_fn, state, max_lengths, force_prefix, collect=collect)


def force_prefix(scores: tf.Tensor, step: tf.Tensor, state: dict) -> tf.Tensor:
    """The `TokenConstraint` of `PrefixConstrained`: `scores [n, V]` with every token but the
    prefix's at `step` set to -inf in the rows still inside their prefix, and every token outside
    `prefix_next` in the rows at the step after it; other rows as they are."""
    prefix = state["prefix"]  # [n, P]
    lengths = tf.reduce_sum(tf.cast(tf.not_equal(prefix, PAD_ID), tf.int32), axis=1)  # [n]
    padded = tf.pad(prefix, [[0, 0], [0, 1]])  # a column to read past every prefix (and when P = 0)
    column = tf.gather(padded, tf.minimum(step, tf.shape(prefix)[1]), axis=1)  # [n]
    allowed = tf.one_hot(column, tf.shape(scores)[1], on_value=True, off_value=False)  # [n, V]
    after = state.get("prefix_next")
    after = tf.ones_like(allowed) if after is None else after
    allowed = tf.where((step < lengths)[:, None], allowed, tf.logical_or(after, (step != lengths)[:, None]))
    return tf.where(allowed, scores, tf.constant(-float("inf"), scores.dtype))


def _nothing_collected(strategy: DecodingStrategy, collect: str | None) -> None:
    if collect:
        raise ValueError(f"{type(strategy).__name__} collects no state entries (asked for {collect!r})")


@dataclass(frozen=True)
class FixedLengthGreedySearch(DecodingStrategy):
    """`GreedySearch` with static shapes (`fixed_length_greedy_search`): every row steps until the
    batch's last sentence ends; the same tokens, lengths and scores."""

    length_penalty_alpha: float
    output_length: int
    name: ClassVar[str] = "greedy"
    static_shapes: ClassVar[bool] = True

    def search(self, step_fn, state, max_lengths, *, collect=None) -> SearchResult:
        _nothing_collected(self, collect)
        return fixed_length_greedy_search(step_fn, state, max_lengths, self.output_length)


@dataclass(frozen=True)
class FixedShapeBeamSearch(DecodingStrategy):
    """`BeamSearch` with static shapes (`fixed_shape_beam_search`): no sentence leaves the batch; the
    same best hypotheses, lengths and scores. Its `nbest` is the best alone (it keeps no n-best list)."""

    beam_width: int
    length_penalty_alpha: float
    output_length: int
    constant_keys: tuple[str, ...] = ()
    name: ClassVar[str] = "beam"
    static_shapes: ClassVar[bool] = True

    def search(self, step_fn, state, max_lengths, *, collect=None) -> SearchResult:
        _nothing_collected(self, collect)
        return fixed_shape_beam_search(
            step_fn,
            state,
            max_lengths,
            self.output_length,
            self.beam_width,
            self.length_penalty_alpha,
            constant_keys=self.constant_keys,
        )
