"""What a model costs: training FLOPs counted from the layer sizes, and where a step's time goes.

The benchmark reports both (`attend bench`); they live beside the model because they follow its
layers and must change with them.
"""

from __future__ import annotations

import statistics
import time

import tensorflow as tf

from app.models.losses import masked_cross_entropy
from app.models.seq2seq import build_model
from app.models.styles import make_style
from app.special_tokens import FIRST_PIECE_ID


def model_gflop_per_example(
    model: dict, source_vocab: int, target_vocab: int, source_tokens: float, target_tokens: float
) -> float:
    """Training GFLOP per sentence pair from the layer sizes (2 FLOP per multiply-add; backward = 2×
    forward). Embedding lookups, element-wise ops and the softmax are left out.

    `model` is the config's model section (`build_model`'s keyword arguments). The count follows the
    model's math as written (a step's cell reads its whole input x_i), not the once-per-sentence
    rewrites that compute the same; the attention style counts its own part (`DecoderStyle`).
    """
    embedding, units = model["embedding_dim"], model["units"]
    encoder_units = model.get("encoder_units") or units
    annotation_dim, gates = 2 * encoder_units, 4 if model["cell"] == "lstm" else 3
    style = make_style(
        model["attention_style"],
        units=units,
        attention_units=model["attention_units"],
        readout_units=model["readout_units"],
        maxout_pieces=model["maxout_pieces"],
        luong_score=model.get("luong_score", "general"),
        input_feeding=model.get("input_feeding", False),
    )

    def cell(inputs: int, size: int) -> int:
        return gates * (inputs * size + size * size)

    per_source = 2 * cell(embedding, encoder_units) + style.source_multiply_adds(annotation_dim)
    per_target = (
        style.target_multiply_adds(embedding, annotation_dim, source_tokens)
        + cell(style.cell_input_size(embedding, annotation_dim), units)
        + style.readout_size * target_vocab
    )
    bridge = encoder_units * units  # s_0 = tanh(W_s backward h_1)
    return 3 * 2 * (source_tokens * per_source + bridge + target_tokens * per_target) / 1e9


def step_breakdown(
    model_settings: dict, vocab_size: int, batch_size: int = 64, length: int = 11, repeats: int = 30
) -> dict:
    """Milliseconds of forward + backward for the whole model and for its parts timed alone
    (encoder, decoder recurrence up to the readout inputs, readout + loss) on random ids: where a
    training step's time goes."""
    model = build_model(vocab_size, vocab_size, **{**model_settings, "dropout": 0.0})
    ids = tf.random.stateless_uniform([batch_size, length], (1, 2), FIRST_PIECE_ID, vocab_size, tf.int32)
    encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
    source_embedding, target_embedding = (
        model.get_layer("source_embedding"),
        model.get_layer("target_embedding"),
    )
    annotations, *initial = encoder(source_embedding(ids))
    embedded, mask = target_embedding(ids), tf.ones([batch_size, length], tf.bool)

    def readout_inputs():
        states, source = decoder.start(annotations, mask, initial)
        return decoder.run_recurrence(embedded, states, source)  # [batch, tgt, …]

    fixed_readout_inputs = readout_inputs()  # a constant: the readout part timed without the loop
    # parts get gradients for the variables they use; the others' are None and dropped
    parts = {
        "full": (
            lambda: masked_cross_entropy(ids, model([ids, ids], training=True)),
            model.trainable_variables,
        ),
        "encoder": (lambda: tf.reduce_sum(encoder(source_embedding(ids))[0]), encoder.trainable_variables),
        "decoder_recurrence": (lambda: tf.reduce_sum(readout_inputs()), decoder.trainable_variables),
        "readout_and_loss": (
            lambda: masked_cross_entropy(ids, decoder.readout(fixed_readout_inputs, training=True)),
            decoder.trainable_variables,
        ),
    }
    return {
        name: round(_time_gradient(loss, variables, repeats), 2) for name, (loss, variables) in parts.items()
    }


def _time_gradient(loss_fn, variables, repeats: int) -> float:
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables) if g is not None]

    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        [gradient.numpy() for gradient in step()]
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)
