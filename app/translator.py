"""The Translator: tokenizers + model + in-graph decoding + detokenizer in one `tf.Module`, and
its atomic, checked save as a SavedModel.

The SavedModel is the product's contract with other programs (docs/ARCHITECTURE.md). Loading it
needs only `tensorflow` and `tensorflow_text`:

    translator = tf.saved_model.load("models/<run>/export")
    out = translator.signatures["serving_default"](text=tf.constant(["Y lloró Jesús."]))
    out["translation"], out["score"]

`save_translator` writes into a staging folder, checks it by reloading it in a fresh process
that imports only those two packages, and only then renames it over the previous SavedModel, so
a failed or broken export never replaces a good one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf

from app.config import Config
from app.data.corpus import prepared_train_files
from app.data.lexicon import LexicalTable, build_lexical_table
from app.data.pipeline import add_source_end
from app.data.tokenizer import WHITESPACE_RUN, SubwordTokenizer, load_tokenizer
from app.models.alignment import pharaoh_alignment
from app.models.decoding import DecodingStrategy, SamplingSearch
from app.models.ensemble import EnsembleDecoding, combined_logits
from app.models.search import UNREACHABLE_LOG_PROB, NBestResult, SearchResult, max_output_lengths
from app.models.seq2seq import Seq2SeqDecoding, build_model
from app.models.shortlist import shortlist_candidates
from app.processes import run_python_for_json
from app.special_tokens import END_ID, PAD_ID, START_ID, UNKNOWN_ID

MODEL_CARD_NAME = "model_card.json"  # inside every SavedModel folder this module writes
# With `xla`, greedy batches of up to this many sentences (beam batches: the second figure) decode
# through the compiled fixed-shape search. There per-op overhead dominates and XLA saves up to half
# the time; in larger batches the uncompiled search, which drops ended sentences from the batch,
# does less work. Measured by the bench (bench-size model, 2 cores, steady state): greedy 1.6–1.9×
# at batch 1 and 1.5–2.2× at batch 8, but 0.65–0.8× at batch 64; beam 4 1.7–2.3× at batch 1,
# 1.5× at batch 8 and 0.9× at batch 32 (one sentence repeated).
XLA_MAX_BATCH = {"greedy": 16, "beam": 8}  # by `DecodingStrategy.name`
XLA_MIN_SOURCE_LENGTH = 8  # padded source lengths: powers of two from here, so few shapes compile


class Translator(tf.Module):
    """Text in, text out: the module saved as the SavedModel.

    Args:
        model: the trained functional model, or an ensemble's member models (the same vocabularies):
            their log-probabilities are averaged at every step (`app.models.ensemble`), in every
            signature, `score` included; `model` is then the first member.
        source_tokenizer, target_tokenizer: the run's SentencePiece tokenizers.
        vocabulary_files: `{name: path}` of the tokenizer files, carried as SavedModel assets.
        max_length_ratio, max_length_offset, max_output_tokens: output length limit per
            sentence, min(ratio · source tokens + offset, max_output_tokens).
        max_input_tokens: longer inputs are truncated (keeping their end marker).
        beam_width, length_penalty_alpha: the search (1 = greedy); GNMT length normalisation.
        xla: give `translate_ids`'s search the `jit_compile` attribute, and let `serving_default`
            batches of up to `XLA_MAX_BATCH` sentences decode through a compiled fixed-shape search
            (greedy or beam), padded to a power-of-two batch and source length (so that a few
            shapes compile, once each). Off by default: stock TensorFlow Serving does not run
            XLA-compiled functions unless started with a flag, and its GPU builds without the XLA
            compiler fail on them (tensorflow/serving#2214). Either way the id-level path is
            XLA-compilable: a caller can wrap it in `tf.function(jit_compile=True)`.
        lexical_table: decode the string signatures over a per-batch shortlist of the target
            vocabulary drawn from it (`app.models.shortlist`): faster, and lossy where the best
            token lies outside the list; scores are then log-probabilities within the list.
            `translate_ids` (static shapes) always scores the whole vocabulary.

    No defaults here: the config's `decode` section is their one source (`build_translator`).

    Inputs are checked in the graph, because a reloaded signature does not check them itself:
    `text` must be 1-D (a scalar or a `[batch, 1]` tensor raises InvalidArgumentError instead of
    being flattened); invalid UTF-8 in `text` is replaced, each invalid byte sequence by one U+FFFD
    as Python's `bytes.decode("utf-8", "replace")` does, so the model never sees undefined bytes;
    `translate_ids` raises InvalidArgumentError for ids outside [0, source vocabulary size).
    """

    def __init__(
        self,
        model: keras.Model | Sequence[keras.Model],
        source_tokenizer: SubwordTokenizer,
        target_tokenizer: SubwordTokenizer,
        vocabulary_files: dict[str, Path],
        *,
        max_length_ratio: float,
        max_length_offset: int,
        max_output_tokens: int,
        max_input_tokens: int,
        beam_width: int,
        length_penalty_alpha: float,
        xla: bool,
        lexical_table: LexicalTable | None = None,
    ):
        super().__init__(name="translator")
        self.members = [model] if isinstance(model, keras.Model) else list(model)
        self.model = self.members[0]
        self.source_tokenizer, self.target_tokenizer = source_tokenizer, target_tokenizer
        self.vocabulary_files = {
            name: tf.saved_model.Asset(str(path)) for name, path in vocabulary_files.items()
        }
        single = len(self.members) == 1
        self._decoding = Seq2SeqDecoding(self.model) if single else EnsembleDecoding(self.members)
        self._length_limits = (max_length_ratio, max_length_offset, max_output_tokens)
        self._max_input_tokens = max_input_tokens
        self.beam_width = beam_width
        self.shortlist = None
        if lexical_table is not None:  # variables, so that the SavedModel holds them once
            tables = lexical_table._asdict().items()
            self.shortlist = LexicalTable(*(tf.Variable(t, trainable=False, name=n) for n, t in tables))
        self._choose_searches(beam_width, length_penalty_alpha, max_output_tokens, xla=xla)

    def _choose_searches(self, beam_width: int, alpha: float, output_length: int, *, xla: bool) -> None:
        """Which search each signature runs, decided here once; the signatures then only run them.

        The string signatures: `decoding_strategy`, greedy or beam by the beam width, over the
        batch's shortlist where there is one. `translate_ids`: greedy with static shapes over the
        whole vocabulary, compiled with `xla`. With `xla`, `serving_default`'s batches of up to
        `XLA_MAX_BATCH` sentences: `decoding_strategy` with static shapes, compiled (for greedy,
        the very function `translate_ids` runs)."""
        constant_keys = self._decoding.CONSTANT_KEYS
        self.decoding_strategy = DecodingStrategy.from_settings(
            beam_width, alpha, constant_keys=constant_keys
        )
        self.completing_strategy = DecodingStrategy.from_settings(  # `complete`: forced through a prefix
            beam_width, alpha, constant_keys=constant_keys, prefix=True
        )
        ids_strategy = DecodingStrategy.from_settings(1, alpha, output_length=output_length)
        self._translate_valid_ids = self._static_search_function(ids_strategy, jit_compile=xla)
        self._translate_batch = self._search_batch
        if xla:
            compiled = DecodingStrategy.from_settings(
                beam_width, alpha, output_length=output_length, constant_keys=constant_keys
            )
            self._compiled_search = (
                self._translate_valid_ids
                if compiled == ids_strategy
                else self._static_search_function(compiled, jit_compile=True)
            )
            self._xla_max_batch = XLA_MAX_BATCH[compiled.name]
            self._translate_batch = self._compiled_for_small_batches

    @property
    def tokenizers(self) -> tuple[SubwordTokenizer, SubwordTokenizer]:
        return self.source_tokenizer, self.target_tokenizer

    def source_ids(self, text: tf.Tensor) -> tf.Tensor:
        """`[batch]` strings → `[batch, src]` int32 ids, 0-padded, each ending with the end id."""
        with tf.device("/CPU:0"):  # string ops have CPU kernels only: a GPU server keeps them here
            ids = self.source_tokenizer.tokenize(self._valid_text(text))[:, : self._max_input_tokens - 1]
            dense = add_source_end(ids).to_tensor(0)
        # an empty batch still needs one time step: recurrent layers cannot run over zero steps
        return tf.pad(dense, [[0, 0], [0, tf.maximum(1 - tf.shape(dense)[1], 0)]])

    @staticmethod
    def _valid_text(text: tf.Tensor) -> tf.Tensor:
        """`text` checked to be `[batch]` and transcoded to valid UTF-8 (U+FFFD for invalid bytes).

        The check runs in the graph: a reloaded signature passes a scalar or a `[batch, 1]` tensor
        on to ops that would treat it as a batch, instead of raising.
        """
        text = tf.ensure_shape(text, [None])
        return tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)

    def search(self, source_ids: tf.Tensor, collect: str | None = None) -> SearchResult:
        """`decoding_strategy`'s search from `[batch, src]` ids, over the whole vocabulary or the
        batch's shortlist; `collect` names a state entry to keep per step (`"attention"`)."""
        step, to_ids = self._step_for(source_ids)
        result = self.decoding_strategy.search(step, *self._start(source_ids), collect=collect)
        return result._replace(tokens=to_ids(result.tokens))

    def search_nbest(self, source_ids: tf.Tensor) -> NBestResult:
        """`decoding_strategy`'s candidate translations per sentence, best first (a beam's K)."""
        step, to_ids = self._step_for(source_ids)
        result = self.decoding_strategy.nbest(step, *self._start(source_ids))
        return result._replace(tokens=to_ids(result.tokens))

    def _start(self, source_ids: tf.Tensor) -> tuple[dict, tf.Tensor]:
        """The initial decoding state and each sentence's output limit."""
        source_lengths = tf.reduce_sum(tf.cast(tf.not_equal(source_ids, 0), tf.int32), axis=1)
        return self._decoding.encode(source_ids), max_output_lengths(source_lengths, *self._length_limits)

    def _step_for(self, source_ids: tf.Tensor):
        """The step function for this batch, over the whole vocabulary or the batch's shortlist, and
        the map from the tokens a search over it returns to vocabulary ids."""
        if self.shortlist is None:
            return self._decoding.step, tf.identity
        candidates = shortlist_candidates(source_ids, self.shortlist.translations, self.shortlist.frequent)
        # positions in `candidates` → ids; padding (0) stays 0
        return self._decoding.shortlisted_step(candidates), lambda tokens: tf.gather(candidates, tokens)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def translate(self, text):
        """`serving_default`: translation and its log-probability (sum over output tokens)."""
        tokens, scores = self._translate_batch(self.source_ids(text))
        return {"translation": self._detokenize(tokens), "score": scores}

    def _search_batch(self, source_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`serving_default`'s output ids and scores."""
        result = self.search(source_ids)
        return result.tokens, result.scores

    def _compiled_for_small_batches(self, source_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`serving_default` with `xla`: batches of up to `XLA_MAX_BATCH` through the compiled search."""
        return tf.cond(
            tf.shape(source_ids)[0] <= self._xla_max_batch,
            lambda: self._padded_compiled_search(source_ids),
            lambda: self._search_batch(source_ids),
        )

    def _padded_compiled_search(self, source_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`_compiled_search` on `source_ids` padded to a power-of-two batch (rows holding only the
        end id) and source length, cut back to the real rows and their longest output."""
        batch, length = tf.shape(source_ids)[0], tf.shape(source_ids)[1]
        padded_batch = _power_of_two_at_least(batch)
        padded_length = _power_of_two_at_least(tf.maximum(length, XLA_MIN_SOURCE_LENGTH))
        filler = tf.one_hot(0, padded_length, on_value=END_ID, off_value=PAD_ID, dtype=tf.int32)
        padded = tf.concat(
            [
                tf.pad(source_ids, [[0, 0], [0, padded_length - length]]),
                tf.tile(filler[None, :], [padded_batch - batch, 1]),
            ],
            axis=0,
        )
        out = self._compiled_search(padded)
        lengths = out["lengths"][:batch]
        longest = tf.reduce_max(tf.concat([lengths, [1]], axis=0))  # ≥ 1 column, as `search` gives
        return out["ids"][:batch, :longest], out["score"][:batch]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def translate_with_attention(self, text):
        """`translate_with_attention`: also the attention matrix `[batch, tgt, src]` and the
        subword strings of both sides ("" at padding), for plots."""
        source_ids = self.source_ids(text)
        result = self.search(source_ids, collect="attention")
        return {
            "translation": self._detokenize(result.tokens),
            "score": result.scores,
            "attention": result.collected,
            "source_tokens": self._pieces(self.source_tokenizer, source_ids),
            "target_tokens": self._pieces(self.target_tokenizer, result.tokens),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def translate_nbest(self, text):
        """`translate_nbest`: the beam's K = decode.beam_width hypotheses per sentence, best first:
        `translations` string [batch, K], `scores` float32 [batch, K] (log-probabilities, as
        `serving_default`'s `score`) and `normalized_scores` [batch, K] (log P / GNMT length penalty:
        the ranking). Where the output limit leaves fewer than K hypotheses, the others are "" with
        score -inf. With a beam width of 1, the greedy translation alone."""
        tokens, _, scores, normalised = self.search_nbest(self.source_ids(text))
        shape = tf.shape(tokens)
        flat = tf.reshape(tokens, [shape[0] * shape[1], shape[2]])
        texts = tf.reshape(self._detokenize(flat), shape[:2])
        reachable = scores > UNREACHABLE_LOG_PROB
        minus_infinity = tf.fill(tf.shape(scores), -np.inf)
        return {
            "translations": tf.where(reachable, texts, ""),
            "scores": tf.where(reachable, scores, minus_infinity),
            "normalized_scores": tf.where(reachable, normalised, minus_infinity),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="source_ids")])
    def translate_ids(self, source_ids):
        """`translate_ids`: the accelerator's part, XLA-compilable with static output shapes. Source ids
        (0-padded, each ending with the end id 2) → greedy output ids `[batch, max_output_tokens]`
        (0 after the end id), their lengths and scores. Tokenization stays on the host.

        The id range is checked here, outside `_translate_valid_ids` (the part `xla` compiles):
        XLA drops Assert ops, and unchecked, an out-of-range id would silently translate."""
        return self._translate_valid_ids(self._checked_source_ids(source_ids))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([], tf.int64, name="seed"),
            tf.TensorSpec([], tf.float32, name="temperature"),
            tf.TensorSpec([], tf.int32, name="topk"),
        ]
    )
    def sample(self, text, seed, temperature, topk):
        """`sample`: a translation drawn from the model, token by token (`SamplingSearch`): from
        softmax(logits / `temperature`) over the `topk` likeliest pieces (0 = all), seeded by `seed`
        (the same seed and batch give the same output). Outputs as `serving_default`; `score` is the
        model's log-probability of the drawn translation. All four inputs are required (a signature
        has no defaults): `decode.sampling_temperature` / `sampling_topk` are what the CLI passes."""
        checks = [
            tf.debugging.assert_positive(temperature, message="sample: temperature must be greater than 0"),
            tf.debugging.assert_non_negative(topk, message="sample: topk must be at least 0 (0 = all)"),
        ]
        with tf.control_dependencies(checks):
            source_ids = self.source_ids(text)
        step, to_ids = self._step_for(source_ids)
        result = SamplingSearch(temperature, topk, seed).search(step, *self._start(source_ids))
        return {
            "translation": self._detokenize(to_ids(result.tokens)),
            "score": result.scores,
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([None], tf.string, name="prefix"),
        ]
    )
    def complete(self, text, prefix):
        """`complete` (interactive completion): each translation forced to start with the target text
        the user typed (`prefix`), then searched on as `serving_default` searches (`completing_strategy`:
        greedy or beam). Outputs as `serving_default`: `translation` the whole text, prefix included,
        `score` its log-probability, the forced pieces included; an empty prefix gives
        `serving_default`'s output. A prefix that ends inside a word is token-healed (`prefix_state`).
        Always over the whole vocabulary (a prefix may hold any piece), also with a shortlist. The
        output may run `decode.max_length_offset` pieces (at least one) past the prefix."""
        same_batch = tf.debugging.assert_equal(
            tf.shape(text)[0], tf.shape(prefix)[0], message="complete: text and prefix batch sizes differ"
        )
        with tf.control_dependencies([same_batch]):
            source_ids = self.source_ids(text)
        result = self.completion(source_ids, prefix)
        return {"translation": self._detokenize(result.tokens), "score": result.scores}

    def completion(self, source_ids: tf.Tensor, prefix: tf.Tensor) -> SearchResult:
        """`completing_strategy`'s search from `[batch, src]` ids through each `[batch]` typed prefix,
        over the whole vocabulary; each sentence's output limit kept past its prefix."""
        state, limits = self._start(source_ids)
        forced, allowed_next, pieces = self.prefix_state(prefix)
        _, offset, ceiling = self._length_limits
        limits = tf.minimum(tf.maximum(limits, pieces + max(offset, 1)), ceiling)
        state = {**state, "prefix": forced, "prefix_next": allowed_next}  # `PREFIX_KEYS`
        return self.completing_strategy.search(self._decoding.step, state, limits)

    def prefix_state(self, prefix: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`[batch]` typed target text → what `PrefixConstrained` forces: the pieces to force `[batch, P]`
        (0-padded), the pieces allowed after them `[batch, V]` bool, and each prefix's pieces `[batch]`
        (at most `decode.max_output_tokens` − 1).

        Token healing (as Guidance does it; CTranslate2 and Sockeye force a prefix's pieces
        as given): a prefix that does not end in whitespace may end inside a word ("Jes"), whose last
        piece ("▁Jes") is then not the one the whole word takes ("▁Jesús"). So that last piece is not
        forced: the next piece must start with its string instead (the piece itself included), and the
        translation still starts with the typed text. A prefix ending in whitespace, or whose last piece
        is the unknown piece or a byte, is forced whole."""
        vocab_size = self.target_tokenizer.vocab_size
        with tf.device("/CPU:0"):  # string ops have CPU kernels only
            text = self._valid_text(prefix)
            ids = self.target_tokenizer.tokenize(text)[:, : self._length_limits[2] - 1]
            lengths = tf.cast(ids.row_lengths(), tf.int32)  # [batch]
            dense = tf.pad(ids.to_tensor(PAD_ID), [[0, 0], [0, 1]])  # a column even when all are empty
            last = tf.gather(dense, tf.maximum(lengths - 1, 0), batch_dims=1)  # [batch]
            vocabulary = self.target_tokenizer.pieces(tf.range(vocab_size))  # [V]
            whole = tf.logical_or(tf.range(vocab_size) <= UNKNOWN_ID, _byte_pieces(vocabulary))  # [V]
            stems = tf.gather(vocabulary, last)  # [batch]
            open_word = tf.logical_not(tf.strings.regex_full_match(text, f"(?s).*{WHITESPACE_RUN}"))
            heal = (lengths > 0) & open_word & ~tf.gather(whole, last)  # [batch]
            forced_lengths = lengths - tf.cast(heal, tf.int32)
            forced = tf.where(tf.range(tf.shape(dense)[1])[None, :] < forced_lengths[:, None], dense, PAD_ID)
            shape = [tf.shape(stems)[0], vocab_size]
            stem_bytes = tf.broadcast_to(tf.strings.length(stems)[:, None], shape)
            heads = tf.strings.substr(
                tf.broadcast_to(vocabulary[None, :], shape), tf.zeros_like(stem_bytes), stem_bytes
            )
            completes = tf.logical_and(tf.equal(heads, stems[:, None]), tf.logical_not(whole)[None, :])
            allowed_next = tf.logical_or(completes, tf.logical_not(heal)[:, None])
        return forced, allowed_next, lengths

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="source"),
            tf.TensorSpec([None], tf.string, name="target"),
        ]
    )
    def score(self, source, target):
        """`score` (forced decoding): how likely the model finds each given translation. `score`
        float32 [batch]: the sum of the target pieces' log-probabilities, end token included (what
        `serving_default`'s `score` is for its own output); `tokens` int32 [batch]: the pieces scored
        (end included); `normalized_score`: `score / tokens`; `token_scores` [batch, tgt] (0 at
        padding). Teacher forcing through the whole model over the whole vocabulary (also with a
        shortlist); targets are cut at `decode.max_output_tokens` pieces as the search would be."""
        same_batch = tf.debugging.assert_equal(
            tf.shape(source)[0], tf.shape(target)[0], message="score: source and target batch sizes differ"
        )
        with tf.control_dependencies([same_batch]):
            source_ids = self.source_ids(source)
        target_ids = self.target_ids(target)
        token_scores = self.forced_scores(source_ids, target_ids)
        scores = tf.reduce_sum(token_scores, axis=1)
        tokens = tf.reduce_sum(tf.cast(tf.not_equal(target_ids, PAD_ID), tf.int32), axis=1)
        return {
            "score": scores,
            "tokens": tokens,
            "normalized_score": scores / tf.cast(tf.maximum(tokens, 1), tf.float32),
            "token_scores": token_scores,
        }

    def target_ids(self, text: tf.Tensor) -> tf.Tensor:
        """`[batch]` strings → `[batch, tgt]` int32 target ids as the decoder emits them, each ending
        with the end id, 0-padded; at most `decode.max_output_tokens` (the end id the last)."""
        max_output_tokens = self._length_limits[2]
        with tf.device("/CPU:0"):  # string ops have CPU kernels only
            ids = self.target_tokenizer.tokenize(self._valid_text(text))[:, : max_output_tokens - 1]
            dense = add_source_end(ids).to_tensor(0)  # the end id appended, as to a source
        # an empty batch still needs one time step, as in `source_ids`
        return tf.pad(dense, [[0, 0], [0, tf.maximum(1 - tf.shape(dense)[1], 0)]])

    def forced_scores(self, source_ids: tf.Tensor, target_ids: tf.Tensor) -> tf.Tensor:
        """Teacher forcing, as in training: the model reads the start id then `target_ids [batch, tgt]`
        shifted right; each target id's log-probability `[batch, tgt]`, 0 at padding."""
        target_in = tf.concat([tf.fill([tf.shape(target_ids)[0], 1], START_ID), target_ids[:, :-1]], axis=1)
        logits = combined_logits(  # an ensemble's members combined as its steps combine them
            [tf.cast(member([source_ids, target_in], training=False), tf.float32) for member in self.members]
        )
        log_probs = tf.gather(tf.nn.log_softmax(logits), target_ids, batch_dims=2)  # [batch, tgt]
        return tf.where(tf.not_equal(target_ids, PAD_ID), log_probs, 0.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def translate_with_alignment(self, text):
        """`translate_with_alignment`: `serving_default`'s outputs plus `alignment` string [batch], each
        target word's most attended source word in Pharaoh format (`app.models.alignment`); words are
        those of the normalised source and of the translation, 0-based, split at spaces."""
        source_ids = self.source_ids(text)
        result = self.search(source_ids, collect="attention")
        return {
            "translation": self._detokenize(result.tokens),
            "score": result.scores,
            "alignment": pharaoh_alignment(
                result.collected,
                self._word_pieces(self.source_tokenizer, source_ids),
                self._word_pieces(self.target_tokenizer, result.tokens),
            ),
        }

    @staticmethod
    def _word_pieces(tokenizer: SubwordTokenizer, ids: tf.Tensor) -> tf.Tensor:
        """The pieces of `ids`, "" at padding and at the end marker (no word of the sentence)."""
        with tf.device("/CPU:0"):
            return tf.where(ids <= END_ID, "", tokenizer.pieces(ids))

    def _checked_source_ids(self, source_ids: tf.Tensor) -> tf.Tensor:
        """`source_ids` once they are known to be a matrix of ids the source embedding has."""
        source_ids = tf.ensure_shape(source_ids, [None, None])
        vocab_size = self.source_tokenizer.vocab_size
        message = f"translate_ids: source_ids must be in [0, {vocab_size}) (the source vocabulary)"
        checks = [
            tf.debugging.assert_non_negative(source_ids, message=message),
            tf.debugging.assert_less(source_ids, vocab_size, message=message),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(source_ids)

    def _static_search_function(self, strategy: DecodingStrategy, *, jit_compile: bool):
        """A `tf.function` of valid `[batch, src]` ids → `strategy`'s `{"ids", "lengths", "score"}`
        over the whole vocabulary (XLA's fixed shapes leave no room for a batch's shortlist)."""

        def static_search(source_ids):
            result = strategy.search(self._decoding.step, *self._start(source_ids))
            return {"ids": result.tokens, "lengths": result.lengths, "score": result.scores}

        return tf.function(
            static_search, input_signature=[tf.TensorSpec([None, None], tf.int32)], jit_compile=jit_compile
        )

    def translate_texts(self, sentences: list[str], batch_size: int = 64) -> list[str]:
        """Python strings in and out, in batches through `translate` (evaluation, the dev monitor)."""
        outputs: list[str] = []
        for start in range(0, len(sentences), batch_size):
            batch = tf.constant(sentences[start : start + batch_size], tf.string)
            outputs += [text.decode("utf-8") for text in self.translate(batch)["translation"].numpy()]
        return outputs

    @staticmethod
    def _pieces(tokenizer: SubwordTokenizer, ids: tf.Tensor) -> tf.Tensor:
        with tf.device("/CPU:0"):
            return tf.where(tf.equal(ids, 0), "", tokenizer.pieces(ids))

    def _detokenize(self, ids: tf.Tensor) -> tf.Tensor:
        """Target ids → text, on the CPU (string ops: a GPU server keeps them off the GPU)."""
        with tf.device("/CPU:0"):
            return self.target_tokenizer.detokenize(ids)

    def signatures(self) -> dict:
        return {
            "serving_default": self.translate.get_concrete_function(),
            "translate_with_attention": self.translate_with_attention.get_concrete_function(),
            "translate_ids": self.translate_ids.get_concrete_function(),
            "translate_nbest": self.translate_nbest.get_concrete_function(),
            "translate_with_alignment": self.translate_with_alignment.get_concrete_function(),
            "score": self.score.get_concrete_function(),
            "sample": self.sample.get_concrete_function(),
            "complete": self.complete.get_concrete_function(),
        }


def _byte_pieces(pieces: tf.Tensor) -> tf.Tensor:
    """Whether each SentencePiece piece is a byte-fallback piece (`<0xE2>`), no text of its own."""
    return tf.strings.regex_full_match(pieces, "<0x[0-9A-F]{2}>")


def _power_of_two_at_least(value: tf.Tensor) -> tf.Tensor:
    """The smallest power of two ≥ `value` (≥ 1), for int32 scalars up to 2**30."""
    value = tf.maximum(value, 1) - 1
    for shift in (1, 2, 4, 8, 16):
        value = tf.bitwise.bitwise_or(value, tf.bitwise.right_shift(value, shift))
    return value + 1


def float32_model(model: keras.Model, config: Config) -> keras.Model:
    """`model` computing in float32, for serving: the bench measured CPU decoding slower in
    bfloat16 (most at batch 1). Variables are float32 under every policy: they carry over exactly."""
    if model.get_layer("decoder").compute_dtype == "float32":
        return model
    vocab_sizes = (model.get_layer(name).input_dim for name in ("source_embedding", "target_embedding"))
    copy = build_float32_model(*vocab_sizes, config)
    copy.set_weights(model.get_weights())
    return copy


def build_float32_model(source_vocab_size: int, target_vocab_size: int, config: Config) -> keras.Model:
    """The config's model in float32, whatever precision policy this process trained under."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return build_model(source_vocab_size, target_vocab_size, **config.model.architecture())
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_translator(
    model: keras.Model | Sequence[keras.Model],
    config: Config,
    vocab_dir: Path,
    tokenizers: tuple[SubwordTokenizer, SubwordTokenizer],
    beam_width: int | None = None,
    length_penalty_alpha: float | None = None,
    xla: bool = False,
    train_files: Sequence[Path] = (),
    shortlist: bool | None = None,
) -> Translator:
    """The run's Translator (of `model`, or of an ensemble's models); `beam_width`,
    `length_penalty_alpha` and `shortlist` override the config's; `xla` exports `translate_ids` with
    the `jit_compile` attribute (see `Translator`). With a shortlist (`decode.shortlist`), its lexical
    table is learnt from `train_files` (the train split)."""
    shortlist = config.decode.shortlist if shortlist is None else shortlist
    files = {
        f"{side}.{kind}": vocab_dir / f"{side}.{kind}"
        for side in ("source", "target")
        for kind in ("model", "vocab")
    }
    return Translator(
        model,
        *tokenizers,
        files,
        max_length_ratio=config.decode.max_length_ratio,
        max_length_offset=config.decode.max_length_offset,
        max_output_tokens=config.decode.max_output_tokens,
        max_input_tokens=config.decode.max_input_tokens,
        beam_width=config.decode.beam_width if beam_width is None else beam_width,
        length_penalty_alpha=config.decode.length_penalty_alpha
        if length_penalty_alpha is None
        else length_penalty_alpha,
        xla=xla,
        lexical_table=shortlist_table(config, vocab_dir, train_files) if shortlist else None,
    )


def shortlist_table(config: Config, vocab_dir: Path, train_files: Sequence[Path]) -> LexicalTable:
    """The lexical table of `decode.shortlist`, from the train split's files."""
    if not train_files or not all(Path(path).is_file() for path in train_files):
        raise ValueError(
            f"decode.shortlist learns its table from the train split, and {list(map(str, train_files))} "
            "is not there: prepare the corpus (`attend prepare`), or pass --data-dir"
        )
    return build_lexical_table(
        train_files,
        vocab_dir,
        config.decode.shortlist_frequent,
        config.decode.shortlist_per_source,
        seed=config.data.seed,
    )


# Runs in a fresh interpreter: proves the export needs nothing but tensorflow and tensorflow_text.
_RELOAD_CHECK = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the SentencePiece ops)
assert not any(name == "app" or name.startswith("app.") for name in sys.modules), "imported project code"
translator = tf.saved_model.load(sys.argv[1])
sentences = json.loads(sys.stdin.read())
out = translator.signatures["serving_default"](text=tf.constant(sentences, tf.string))
print(json.dumps({"translation": [t.decode("utf-8") for t in out["translation"].numpy()],
                  "score": [float(s) for s in out["score"].numpy()]}))
"""


def reload_and_translate(export_dir: Path, sentences: list[str]) -> dict:
    """Translates `sentences` with the export in a fresh process that imports only TF and TF Text."""
    return run_python_for_json(
        ["-c", _RELOAD_CHECK, str(export_dir)], f"Reloading the export at {export_dir}", json.dumps(sentences)
    )


def check_export(export_dir: Path, translator: Translator, sentences: list[str]) -> list[str]:
    """Reloads in a fresh process and requires the same translations as in this process."""
    expected = [
        t.decode("utf-8") for t in translator.translate(tf.constant(sentences))["translation"].numpy()
    ]
    reloaded = reload_and_translate(export_dir, sentences)["translation"]
    if reloaded != expected:
        differences = [(s, e, r) for s, e, r in zip(sentences, expected, reloaded, strict=True) if e != r]
        raise RuntimeError(
            f"The reloaded export translates differently from the trained model: {differences[:3]}"
        )
    return reloaded


def save_translator(
    translator: Translator,
    directory: Path,
    model_card: dict,
    check_sentences: list[str],
    log=print,
    extras=None,
) -> Path:
    """Saves to `directory.staging`, checks it in a fresh process, then atomically replaces `directory`.
    `extras(staging)` writes more into the staged SavedModel (warm-up records) and may complete
    `model_card` before it is written: a failure there, too, leaves `directory` as it was."""
    staging = directory.with_name(f"{directory.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tf.saved_model.save(translator, str(staging), signatures=translator.signatures())
        if extras is not None:
            extras(staging)
        (staging / MODEL_CARD_NAME).write_text(json.dumps(model_card, indent=2, ensure_ascii=False) + "\n")
        check_export(staging, translator, check_sentences or [""])
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        log(f"Export failed; {directory} was left as it was.")
        raise
    previous = directory.with_name(f"{directory.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if directory.exists():
        directory.rename(previous)
    staging.rename(directory)
    shutil.rmtree(previous, ignore_errors=True)
    log(f"Exported the SavedModel to {directory} (reloaded and checked in a fresh process)")
    return directory


class TrainedRun(Protocol):
    """What a Translator is rebuilt from: a run folder (`app.run.RunDir` is one)."""

    vocab_dir: Path
    best_weights: Path

    def config(self) -> Config: ...

    def require_trained(self) -> None: ...


def load_translator(
    run: TrainedRun,
    beam_width: int | None = None,
    length_penalty_alpha: float | None = None,
    xla: bool = False,
    shortlist: bool | None = None,
    data_dir: Path = Path("data"),
    members: Sequence[tuple[Config, Path]] = (),
) -> Translator:
    """Rebuilds a trained run's Translator from its config, vocab folder and best weights;
    `shortlist` overrides `decode.shortlist`, whose table is learnt from the train split in `data_dir`.
    `members`: an ensemble's `(config, weights)` instead of the best weights, each model built from its
    own config (the caller checks that their vocabularies are the run's); decoding follows the run's."""
    run.require_trained()
    config = run.config()
    tokenizers = tuple(load_tokenizer(run.vocab_dir / f"{side}.model", side) for side in ("source", "target"))
    sizes = (tokenizers[0].vocab_size, tokenizers[1].vocab_size)
    models = [
        _model_with_weights(build_float32_model(*sizes, member_config), weights)
        for member_config, weights in (members or [(config, run.best_weights)])
    ]
    train_files = prepared_train_files(data_dir / config.corpus_name)
    return build_translator(
        models if members else models[0],
        config,
        run.vocab_dir,
        tokenizers,
        beam_width,
        length_penalty_alpha,
        xla,
        train_files,
        shortlist,
    )


def _model_with_weights(model: keras.Model, weights: Path) -> keras.Model:
    try:
        model.load_weights(str(weights))
    except OSError as error:  # h5py: truncated or not HDF5 at all
        raise ValueError(
            f"{weights} cannot be read ({error}); the file is damaged: restore it, or train the run again"
        ) from error
    return model
