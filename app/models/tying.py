"""Tied embeddings (Press & Wolf, 2017): layers that use another layer's embedding matrix.

`model.tie_embeddings` (`build_model`) decides which matrices are one variable:

    none    three matrices: source embedding, target embedding, output projection (today's model)
    target  the output projection's kernel is the target embedding matrix transposed
    all     that, and the source embedding is the same matrix too (one joint vocabulary:
            `tokenizer.joint`)

The matrix stays a variable of the `target_embedding` layer only; the layers here hold a reference
that Keras does not track (`_untracked`), so each variable is listed once in `model.weights`, counted
once by `count_params`, saved once in `.weights.h5` and updated once per step through both uses.
"""

from __future__ import annotations

import keras
import tensorflow as tf

TIE_EMBEDDINGS = ("none", "target", "all")


class _NamesItsSharedLayer:
    """`get_config` names the layer whose matrix is read (TensorBoard shows the model's JSON config), but
    the layer cannot be rebuilt from it alone: `build_model` builds it."""

    def get_config(self):
        return {**super().get_config(), "reads": self.embedding.name}

    @classmethod
    def from_config(cls, config):
        raise NotImplementedError(
            f"{cls.__name__} reads {config['reads']}'s matrix: build the model with build_model"
        )


def _untracked(layer: keras.layers.Layer, name: str, value: keras.layers.Layer) -> None:
    """Sets `layer.<name>` without Keras (or TensorFlow's checkpoint graph) adopting `value` as a
    sublayer: its variables belong to the layer that made them."""
    object.__setattr__(layer, name, value)


class VocabularyProjection(keras.layers.Dense):
    """The untied output projection: a `Dense` layer that can also give a subset of its columns."""

    def columns(self, candidates: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(kernel `[readout_size, C]`, bias `[C]`) of the target ids `candidates [C]`."""
        return tf.gather(self.kernel, candidates, axis=1), tf.gather(self.bias, candidates)


class TiedProjection(_NamesItsSharedLayer, keras.layers.Layer):
    """Logits = features · Eᵀ + b, with E the target embedding matrix `[vocab, embedding_dim]`: the
    kernel is the embedding (one variable), the bias is this layer's own. The features must have
    `embedding_dim` values (`model.readout_units`, or `model.units` for luong)."""

    def __init__(self, embedding: keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        _untracked(self, "embedding", embedding)
        self.units = embedding.input_dim

    def build(self, input_shape):
        if input_shape[-1] != self.embedding.output_dim:
            raise ValueError(
                f"tied embeddings need readout features of the embedding size: the readout gives "
                f"{input_shape[-1]}, the embeddings have {self.embedding.output_dim}"
            )
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    @property
    def kernel(self) -> tf.Tensor:
        """`[embedding_dim, vocab]`, as a `Dense` kernel reads (a transposed copy: prefer `columns`)."""
        return tf.transpose(self.embedding.embeddings)

    def call(self, features):
        matrix = tf.cast(self.embedding.embeddings, features.dtype)  # float32 under mixed policies
        flat = tf.reshape(features, [-1, tf.shape(features)[-1]])
        logits = tf.matmul(flat, matrix, transpose_b=True) + tf.cast(self.bias, features.dtype)
        return tf.reshape(logits, tf.concat([tf.shape(features)[:-1], [self.units]], 0))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def columns(self, candidates: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(kernel `[embedding_dim, C]`, bias `[C]`) of the target ids `candidates [C]`: C rows of the
        embedding, not the whole matrix transposed."""
        rows = tf.gather(self.embedding.embeddings, candidates)  # [C, embedding_dim]
        return tf.transpose(rows), tf.gather(self.bias, candidates)


class SharedEmbedding(_NamesItsSharedLayer, keras.layers.Layer):
    """The source embedding of `tie_embeddings=all`: a lookup into the target embedding's matrix (the
    vocabulary is one joint SentencePiece model). It has no variable of its own; `embeddings`,
    `input_dim` and `output_dim` are the shared layer's, so code that reads an `Embedding` reads it."""

    def __init__(self, embedding: keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        _untracked(self, "embedding", embedding)
        self.input_dim, self.output_dim = embedding.input_dim, embedding.output_dim
        self.supports_masking = True

    @property
    def embeddings(self):
        return self.embedding.embeddings

    def build(self, input_shape=None):
        if not self.embedding.built:
            raise ValueError("build the shared embedding first: its matrix must exist under its own name")

    def call(self, ids):
        return keras.ops.cast(keras.ops.take(self.embedding.embeddings, ids, axis=0), self.compute_dtype)

    def compute_mask(self, ids, mask=None):
        return keras.ops.not_equal(ids, 0)  # mask_zero, as the shared layer's

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)


def tying_of(model: keras.Model) -> str:
    """The `tie_embeddings` a model built by `build_model` was built with."""
    if isinstance(model.get_layer("source_embedding"), SharedEmbedding):
        return "all"
    return "target" if isinstance(model.get_layer("decoder").output_projection, TiedProjection) else "none"


def untied_layers(tying: str, other: str) -> set[str]:
    """The layers whose weights differ in number or shape between two tyings of one architecture: the
    decoder (its own output kernel or none) and, for `all`, the source embedding (no matrix of its own)."""
    layers = {"decoder"} if (tying == "none") != (other == "none") else set()
    return layers | ({"source_embedding"} if (tying == "all") != (other == "all") else set())
