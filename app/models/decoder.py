"""Attention decoder: one step function shared by teacher-forced training and in-graph decoding."""

from __future__ import annotations

import keras

from app.models.recurrence import project_inputs
from app.models.styles import DecoderStyle, SourceEncoding
from app.models.tying import TiedProjection, VocabularyProjection


@keras.saving.register_keras_serializable(package="attend")
class AttentionDecoder(keras.layers.Layer):
    """Recurrent decoder around a recurrent cell and an attention style, both given as objects.

    The decoder owns the recurrent cell and the vocabulary projection; everything that differs
    between attention styles (their weights, what is projected once per sentence, the step, the
    teacher-forced run, what the output layer reads) lives in one style class, chosen once from the
    config (`app.models.styles.make_style`) and passed in:

    - `"bahdanau"`: the paper. Attend from s_{i-1}, feed [E y_{i-1}; c_i] into the cell, read out
      from [s_i; c_i; E y_{i-1}] through a deep (maxout) output.
    - `"additive_after"`: the same score and readout, but the cell runs first and attention reads
      s_i after it (the TensorFlow tutorial's shape; faster to train).
    - `"luong"`: Luong et al. (2015) global attention, `general` or `dot` score, the attentional
      state h̃_i = tanh(W_c [c_i; s_i]) feeds the output layer; optional input feeding.
    - `"none"`: the paper's RNNencdec baseline, one fixed summary of the sentence at every step.

    Keras 3's RNN layer takes no `constants`, so the styles run their own `tf.scan` over the
    target positions (XLA-compilable; attention and cell work on 2-D tensors inside it). The
    embedding's share of the cell input is projected for all positions in one matmul before the
    loop (`embed_inputs`).

    Args:
        vocab_size: target vocabulary size (logits per position).
        cell: the Keras step cell, unbuilt (`RecurrentCell.step_cell`); its `units` are the decoder
            state size. Its weights are read by the split-projection steps of
            `app.models.recurrence`, not called.
        style: the attention style, unbuilt (`make_style`), made for a decoder of `cell.units`.
        dropout: dropout before the output projection.
        tied_embedding: the target embedding layer whose matrix is also the output projection's
            kernel (`model.tie_embeddings`: `app.models.tying.TiedProjection`); None: a projection of
            its own.

    The config holds the cell and the style serialised, so `from_config(get_config())` rebuilds
    the same decoder; a tied decoder cannot be rebuilt alone (its kernel is another layer's
    matrix): `build_model` builds it.

    Call arguments:
        target_embeddings: `[batch, tgt, embedding_dim]` of the decoder inputs (start + target[:-1]).
        annotations: `[batch, src, annotation_dim]`; its mask (False at padding) arrives as
            `annotations_mask` from the encoder automatically.
        initial_state: list of `[batch, units]` tensors (one for GRU, h and c for LSTM).

    Returns:
        logits `[batch, tgt, vocab_size]`, without a mask: the loss masks padding from the labels.
    """

    def __init__(
        self,
        vocab_size: int,
        cell: keras.layers.Layer,
        style: DecoderStyle,
        dropout: float = 0.0,
        tied_embedding: keras.layers.Embedding | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if style.units != cell.units:
            raise ValueError(f"the style is made for {style.units} units, the cell has {cell.units}")
        self.vocab_size, self.units, self.dropout = vocab_size, cell.units, dropout
        # === Layers === (the cell and the style arrive made, in that order: see `build_model`)
        self.cell, self.style = cell, style
        self.readout_dropout = keras.layers.Dropout(dropout, name="readout_dropout")
        self.tied = tied_embedding is not None
        if self.tied:
            self.output_projection = TiedProjection(tied_embedding, name="output_projection")
        else:
            self.output_projection = VocabularyProjection(vocab_size, name="output_projection")

    def build(self, target_embeddings_shape, annotations_shape, initial_state_shape=None):
        embedding_dim, annotation_dim = target_embeddings_shape[-1], annotations_shape[-1]
        self.embedding_rows = embedding_dim
        self.cell.build((None, self.style.cell_input_size(embedding_dim, annotation_dim)))
        self.style.build_for(embedding_dim, annotation_dim)
        self.output_projection.build((None, self.style.readout_size))

    # === Shared by training and decoding ===
    def start(self, annotations, source_mask, encoder_states: list) -> tuple[list, SourceEncoding]:
        """The states before the first step and the source projected once per sentence."""
        return self.style.initial_states(encoder_states), self.style.project_source(
            self.cell, annotations, source_mask
        )

    def embed_inputs(self, embeddings):
        """E y · W_e + b, the embedding's share of the cell input, for one or all positions at once."""
        return project_inputs(self.cell, embeddings, 0, embeddings.shape[-1])

    def readout(self, readout_inputs, training=None):
        """Logits from the style's readout inputs; works on `[batch, …]` and `[batch, tgt, …]` alike."""
        features = self.style.readout_features(readout_inputs)
        return self.output_projection(self.readout_dropout(features, training=training))

    def decode_step(self, previous_embedding, states, source: SourceEncoding):
        """Inference step from E y_{i-1} `[batch, embedding_dim]`: (logits `[batch, vocab]`, new states,
        attention `[batch, src]`)."""
        features, new_states, weights = self.decode_features(previous_embedding, states, source)
        return self.output_projection(features), new_states, weights

    def projection_columns(self, candidates):
        """(kernel `[readout_size, C]`, bias `[C]`) of the output projection for the target ids
        `candidates [C]`, for a search over part of the vocabulary (tied or not)."""
        return self.output_projection.columns(candidates)

    def decode_features(self, previous_embedding, states, source: SourceEncoding):
        """`decode_step` up to the vocabulary projection: (its input features `[batch, readout_size]`,
        new states, attention), for a search that projects onto part of the vocabulary."""
        new_states, readout_inputs, weights = self.style.step(
            self.cell, self.embed_inputs(previous_embedding), previous_embedding, states, source
        )
        return self.style.readout_features(readout_inputs), new_states, weights

    # === Teacher forcing over all target positions ===
    def run_recurrence(self, target_embeddings, states, source: SourceEncoding):
        """All target positions of the decoder inputs → readout inputs `[batch, tgt, …]`."""
        return self.style.run(
            self.cell, self.embed_inputs(target_embeddings), target_embeddings, states, source
        )

    def call(self, target_embeddings, annotations, initial_state, annotations_mask=None, training=None):
        states, source = self.start(annotations, annotations_mask, list(initial_state))
        return self.readout(self.run_recurrence(target_embeddings, states, source), training=training)

    def compute_mask(self, target_embeddings, mask=None):
        return None

    def compute_output_shape(self, target_embeddings_shape, annotations_shape, initial_state_shape=None):
        return (*target_embeddings_shape[:2], self.vocab_size)

    def get_config(self):
        config = {"vocab_size": self.vocab_size, "dropout": self.dropout}
        if self.tied:  # named only (TensorBoard shows the JSON config): `from_config` refuses it
            config["tied_embedding"] = self.output_projection.embedding.name
        for key in ("cell", "style"):  # unbuilt, as the constructor takes them: `build` builds both
            serialised = keras.saving.serialize_keras_object(getattr(self, key))
            config[key] = {name: value for name, value in serialised.items() if name != "build_config"}
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        if config.get("tied_embedding"):
            raise NotImplementedError(
                f"a decoder tied to {config['tied_embedding']} reads its matrix: build it with build_model"
            )
        layers = {key: keras.saving.deserialize_keras_object(config[key]) for key in ("cell", "style")}
        return cls(**{**config, **layers})
