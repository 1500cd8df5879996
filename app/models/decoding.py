"""Decoding strategies: which search turns a step function into output tokens, decided once from
the decode settings and then run on every batch (the shape of OpenNMT-tf's
`DecodingStrategy.from_params` + `dynamic_decode`, and of keras-hub's `CausalLM.compile(sampler=…)`).

A strategy is Python used while tracing: the graph it builds holds core TensorFlow ops only, so a
SavedModel traced through one loads without this module. Every strategy runs over a step function
`step_fn(tokens, state) -> (logits, state)` (`app.models.search`) and knows nothing of models or
tokenizers; per-sentence inputs a strategy may need beyond the step function (a prefix to force)
travel in `state`, batch-major like its other entries, and a call's scalars (`SamplingSearch`'s
seed, temperature and top-k) are the strategy's own fields, built inside the traced function.

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
    beam_search,
    beam_search_nbest,
    fixed_length_greedy_search,
    fixed_shape_beam_search,
    greedy_search,
    length_penalty,
    sampling_choice,
)


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

    @classmethod
    def from_settings(
        cls,
        beam_width: int,
        length_penalty_alpha: float,
        *,
        output_length: int | None = None,
        constant_keys: tuple[str, ...] = (),
    ) -> DecodingStrategy:
        """The strategy for these decode settings: greedy at a beam width of 1, else beam search;
        with `output_length`, its static-shape variant (XLA, TPUs) writing into that many columns."""
        if beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {beam_width}")
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
        return beam_search(
            step_fn,
            state,
            max_lengths,
            self.beam_width,
            self.length_penalty_alpha,
            collect=collect,
            constant_keys=self.constant_keys,
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
