"""Ensemble decoding: several trained models of the same vocabularies decode as one.

At every step each member scores the next token from its own state, and the ensemble's
distribution is the mean of the members' log-probabilities, renormalised (the searches take their
own log-softmax of what a step returns): a product of experts, the normalised geometric mean of
the members' distributions. OpenNMT-py and Marian combine members by their log-probabilities too;
fairseq averages the probabilities instead. Members may differ in architecture (each keeps its own
layers and state); only the vocabularies must be the same, which the caller checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from app.models.seq2seq import Seq2SeqDecoding


def combined_logits(logits: Sequence[tf.Tensor]) -> tf.Tensor:
    """`[…, vocab]` whose softmax is the ensemble's distribution: one member's logits as they are (so an
    ensemble of one decodes exactly as its model), else the mean of the members' log-softmax."""
    if len(logits) == 1:
        return logits[0]
    return tf.add_n([tf.nn.log_softmax(member) for member in logits]) / len(logits)


class EnsembleDecoding:
    """`Seq2SeqDecoding`'s interface (`encode`, `step`, `shortlisted_step`, `CONSTANT_KEYS`) over the
    member models, for greedy, beam and sampling search alike.

    The state is one flat, batch-major dict, so that the searches tile, gather and drop it as they do a
    single model's: member i's entries under `m{i}/` (`m0/states`, `m0/annotations`, …; its encoder
    outputs are constant keys), and `attention`, the mean of the members' weights `[batch, src]`
    (for plots and word alignments).
    """

    def __init__(self, models: Sequence[keras.Model]):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = [Seq2SeqDecoding(model) for model in models]
        self.prefixes = [f"m{index}/" for index in range(len(models))]
        self.CONSTANT_KEYS = tuple(
            prefix + key for prefix in self.prefixes for key in Seq2SeqDecoding.CONSTANT_KEYS
        )

    def encode(self, source_ids: tf.Tensor) -> dict:
        """`[batch, src]` int ids (0-padded) → the members' initial states, side by side."""
        state: dict = {}
        for prefix, member in zip(self.prefixes, self.members, strict=True):
            state.update(self._prefixed(prefix, member.encode(source_ids)))
        return {**state, "attention": tf.zeros(tf.shape(source_ids), tf.float32)}

    def step(self, tokens: tf.Tensor, state: dict) -> tuple[tf.Tensor, dict]:
        """`step_fn(tokens [batch], state) → (logits [batch, vocab], state)`: every member steps."""
        return self._combined([member.step for member in self.members], tokens, state)

    def shortlisted_step(self, candidates: tf.Tensor):
        """`step` over the target ids `candidates [C]` only (see `Seq2SeqDecoding.shortlisted_step`):
        each member's shortlisted step, combined over the candidates."""
        steps = [member.shortlisted_step(candidates) for member in self.members]
        return lambda positions, state: self._combined(steps, positions, state)

    def _combined(self, steps, tokens: tf.Tensor, state: dict) -> tuple[tf.Tensor, dict]:
        logits, attention, updated = [], [], dict(state)
        for prefix, step in zip(self.prefixes, steps, strict=True):
            member_logits, member_state = step(tokens, self._member_state(prefix, state))
            logits.append(member_logits)
            attention.append(tf.cast(member_state["attention"], tf.float32))
            updated.update(self._prefixed(prefix, member_state))
        updated["attention"] = tf.add_n(attention) / len(attention)
        return combined_logits(logits), updated

    @staticmethod
    def _prefixed(prefix: str, member_state: dict) -> dict:
        """A member's entries under its prefix; its own attention is left out (the mean stands for it)."""
        return {prefix + key: value for key, value in member_state.items() if key != "attention"}

    @staticmethod
    def _member_state(prefix: str, state: dict) -> dict:
        return {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
