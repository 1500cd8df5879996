"""Pretrained word vectors into a built model's embedding matrices (`model.source_embeddings`,
`model.target_embeddings`, `model.freeze_embeddings`), before it is compiled."""

from __future__ import annotations

import keras
import tensorflow as tf

from app.config import ModelConfig
from app.data.prepare import PreparedData
from app.data.tokenizer import SubwordTokenizer
from app.data.word_vectors import candidate_words, map_onto_vocabulary, read_word_vectors

EMBEDDING_LAYERS = {"source": "source_embedding", "target": "target_embedding"}


def vocabulary_pieces(tokenizer: SubwordTokenizer) -> list[str]:
    """Every piece string of the tokenizer's vocabulary, index = id."""
    pieces = tokenizer.pieces(tf.range(tokenizer.vocab_size, dtype=tf.int32)).numpy()
    return [piece.decode("utf-8") for piece in pieces]


def apply_pretrained_embeddings(model: keras.Model, model_config: ModelConfig, data: PreparedData) -> dict:
    """For each side whose setting names a file, reads its word vectors, writes them into the rows of the
    pieces that are those words (`app.data.word_vectors.map_onto_vocabulary`: rescaled to the initial
    matrix's size, reserved ids untouched) and, with `freeze_embeddings`, makes that embedding layer
    non-trainable. Call it after the model is built and before `model.compile` (which fixes the
    trainable variables), inside the strategy's scope where there is one.

    Returns the coverage record (`Coverage.as_dict()`) of each side that got vectors, by side ("source",
    "target"); an empty dict when neither setting is set. A bad file or a dimension other than
    `model.embedding_dim` raises `ValueError` naming the setting."""
    tokenizers = {"source": data.source_tokenizer, "target": data.target_tokenizer}
    records = {}
    for side, layer_name in EMBEDDING_LAYERS.items():
        path = getattr(model_config, f"{side}_embeddings")
        if not path:
            continue
        layer = model.get_layer(layer_name)
        try:
            records[side] = _load_into(layer, vocabulary_pieces(tokenizers[side]), path)
        except ValueError as error:
            raise ValueError(f"model.{side}_embeddings={path}: {error}") from error
        if model_config.freeze_embeddings:
            layer.trainable = False
    return records


def _load_into(layer: keras.layers.Embedding, pieces: list[str], path: str) -> dict:
    vectors = read_word_vectors(path, keep=candidate_words(pieces))
    matrix, coverage = map_onto_vocabulary(pieces, vectors, keras.ops.convert_to_numpy(layer.embeddings))
    layer.embeddings.assign(matrix.astype(layer.embeddings.dtype))
    return coverage.as_dict()
