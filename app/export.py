"""SavedModel export: tokenizers + model + in-graph decoding + detokenizer in one `tf.Module`.

The SavedModel is the product's contract with other programs (DESIGN.md). Loading it needs
only `tensorflow` and `tensorflow_text`:

    translator = tf.saved_model.load("models/<run>/export")
    out = translator.signatures["serving_default"](text=tf.constant(["Y lloró Jesús."]))
    out["translation"], out["score"]

Export writes into a staging folder, checks it by reloading it in a fresh process that imports
only those two packages, and only then renames it over the previous export, so a failed or
broken export never replaces a good one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from app.config import Config, load_config
from app.data.pipeline import add_source_end
from app.data.tokenizer import SubwordTokenizer, load_tokenizer
from app.models.search import beam_search, fixed_length_greedy_search, greedy_search, max_output_lengths
from app.models.seq2seq import Seq2SeqDecoding, build_model
from app.processes import run_python_for_json

EXPORT_DIR_NAME = "export"
MODEL_CARD_NAME = "model_card.json"
BEST_WEIGHTS = "checkpoints/best.weights.h5"  # inside a run folder


class Translator(tf.Module):
    """Text in, text out: the module saved as the SavedModel.

    Args:
        model: the trained functional model.
        source_tokenizer, target_tokenizer: the run's SentencePiece tokenizers.
        vocabulary_files: `{name: path}` of the tokenizer files, carried as SavedModel assets.
        max_length_ratio, max_length_offset, max_output_tokens: output length limit per
            sentence, min(ratio · source tokens + offset, max_output_tokens).
        max_input_tokens: longer inputs are truncated (keeping their end marker).
    """

    def __init__(
        self,
        model: keras.Model,
        source_tokenizer: SubwordTokenizer,
        target_tokenizer: SubwordTokenizer,
        vocabulary_files: dict[str, Path],
        *,
        max_length_ratio: float = 2.0,
        max_length_offset: int = 10,
        max_output_tokens: int = 256,
        max_input_tokens: int = 256,
        beam_width: int = 1,
        length_penalty_alpha: float = 0.6,
    ):
        super().__init__(name="translator")
        self.model = model
        self.source_tokenizer, self.target_tokenizer = source_tokenizer, target_tokenizer
        self.vocabulary_files = {
            name: tf.saved_model.Asset(str(path)) for name, path in vocabulary_files.items()
        }
        self._decoding = Seq2SeqDecoding(model)
        self._length_limits = (max_length_ratio, max_length_offset, max_output_tokens)
        self._max_input_tokens = max_input_tokens
        self.beam_width, self._alpha = beam_width, length_penalty_alpha

    def source_ids(self, text: tf.Tensor) -> tf.Tensor:
        """`[batch]` strings → `[batch, src]` int32 ids, 0-padded, each ending with the end id."""
        ids = self.source_tokenizer.tokenize(text)[:, : self._max_input_tokens - 1]
        dense = add_source_end(ids).to_tensor(0)
        # an empty batch still needs one time step: recurrent layers cannot run over zero steps
        return tf.pad(dense, [[0, 0], [0, tf.maximum(1 - tf.shape(dense)[1], 0)]])

    def search(self, source_ids: tf.Tensor, collect: str | None = None, static_shapes: bool = False):
        """Greedy (beam width 1) or beam search from `[batch, src]` ids; `static_shapes`: greedy into
        a `[batch, max_output_tokens]` buffer, for XLA."""
        source_lengths = tf.reduce_sum(tf.cast(tf.not_equal(source_ids, 0), tf.int32), axis=1)
        limits = max_output_lengths(source_lengths, *self._length_limits)
        state = self._decoding.encode(source_ids)
        if static_shapes:
            return fixed_length_greedy_search(self._decoding.step, state, limits, self._length_limits[2])
        if self.beam_width > 1:
            return beam_search(
                self._decoding.step,
                state,
                limits,
                self.beam_width,
                self._alpha,
                collect=collect,
                constant_keys=Seq2SeqDecoding.CONSTANT_KEYS,
            )
        return greedy_search(self._decoding.step, state, limits, collect=collect)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def translate(self, text):
        """`serving_default`: translation and its log-probability (sum over output tokens)."""
        result = self.search(self.source_ids(text))
        return {"translation": self.target_tokenizer.detokenize(result.tokens), "score": result.scores}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def translate_with_attention(self, text):
        """`translate_with_attention`: also the attention matrix `[batch, tgt, src]` and the
        subword strings of both sides ("" at padding), for plots."""
        source_ids = self.source_ids(text)
        result = self.search(source_ids, collect="attention")
        return {
            "translation": self.target_tokenizer.detokenize(result.tokens),
            "score": result.scores,
            "attention": result.collected,
            "source_tokens": self._pieces(self.source_tokenizer, source_ids),
            "target_tokens": self._pieces(self.target_tokenizer, result.tokens),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="source_ids")], jit_compile=True)
    def translate_ids(self, source_ids):
        """`translate_ids`: the accelerator's part, XLA-compiled with static output shapes. Source ids
        (0-padded, each ending with the end id 2) → greedy output ids `[batch, max_output_tokens]`
        (0 after the end id), their lengths and scores. Tokenization stays on the host."""
        result = self.search(source_ids, static_shapes=True)
        return {"ids": result.tokens, "lengths": result.lengths, "score": result.scores}

    @staticmethod
    def _pieces(tokenizer: SubwordTokenizer, ids: tf.Tensor) -> tf.Tensor:
        return tf.where(tf.equal(ids, 0), "", tokenizer.pieces(ids))

    def signatures(self) -> dict:
        return {
            "serving_default": self.translate.get_concrete_function(),
            "translate_with_attention": self.translate_with_attention.get_concrete_function(),
            "translate_ids": self.translate_ids.get_concrete_function(),
        }


def float32_model(model: keras.Model, config: Config) -> keras.Model:
    """`model` computing in float32, for serving: the bench measured CPU decoding slower in
    bfloat16 (most at batch 1). Variables are float32 under every policy: they carry over exactly."""
    if model.get_layer("decoder").compute_dtype == "float32":
        return model
    vocab_sizes = (model.get_layer(name).input_dim for name in ("source_embedding", "target_embedding"))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = build_model(*vocab_sizes, **config.to_dict()["model"])
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def build_translator(
    model: keras.Model,
    config: Config,
    vocab_dir: Path,
    tokenizers: tuple[SubwordTokenizer, SubwordTokenizer],
    beam_width: int | None = None,
    length_penalty_alpha: float | None = None,
) -> Translator:
    """The run's Translator; `beam_width` and `length_penalty_alpha` override the config's."""
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


def export_translator(
    translator: Translator, run_dir: Path, model_card: dict, check_sentences: list[str], log=print
) -> Path:
    """Saves to `run_dir/export.staging`, checks it, then atomically replaces `run_dir/export`."""
    final = run_dir / EXPORT_DIR_NAME
    staging = run_dir / f"{EXPORT_DIR_NAME}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tf.saved_model.save(translator, str(staging), signatures=translator.signatures())
        (staging / MODEL_CARD_NAME).write_text(json.dumps(model_card, indent=2, ensure_ascii=False) + "\n")
        check_export(staging, translator, check_sentences or [""])
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        log(f"Export failed; {final} was left as it was.")
        raise
    previous = run_dir / f"{EXPORT_DIR_NAME}.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)
    log(f"Exported the SavedModel to {final} (reloaded and checked in a fresh process)")
    return final


def load_translator(
    run_dir: Path, beam_width: int | None = None, length_penalty_alpha: float | None = None
) -> Translator:
    """Rebuilds a trained run's Translator from its folder (config, vocab, best weights)."""
    weights = run_dir / BEST_WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{run_dir} has no trained weights ({weights}); train it first: nothing to export")
    config = load_config(str(run_dir / "config.yaml"))
    vocab_dir = run_dir / "vocab"
    tokenizers = tuple(load_tokenizer(vocab_dir / f"{side}.model", side) for side in ("source", "target"))
    model = build_model(tokenizers[0].vocab_size, tokenizers[1].vocab_size, **config.to_dict()["model"])
    model.load_weights(str(weights))
    return build_translator(model, config, vocab_dir, tokenizers, beam_width, length_penalty_alpha)


def export_from_run(run_dir: Path, check_sentences: list[str] | None = None, log=print) -> Path:
    """Re-exports a trained run; refuses a run without trained weights."""
    translator = load_translator(run_dir)
    card_path = run_dir / MODEL_CARD_NAME
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    return export_translator(translator, run_dir, card, check_sentences or ["Hola.", ""], log=log)
