"""Encoder-decoder: shapes for ragged batches, masks end to end, the shared step, the masked loss."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.models.losses import MaskedTokenAccuracy, masked_cross_entropy
from app.models.seq2seq import Seq2SeqDecoding, build_model

SOURCE = np.array([[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]], np.int32)  # second sentence padded
TARGET_IN = np.array([[1, 11, 12, 13], [1, 14, 0, 0]], np.int32)
VARIANTS = [("bahdanau", "gru"), ("luong", "gru"), ("bahdanau", "lstm"), ("none", "gru")]


def tiny_model(style="bahdanau", cell="gru", **options):
    sizes = {"embedding_dim": 8, "units": 6, "attention_units": 5, "readout_units": 4, **options}
    return build_model(30, 40, attention_style=style, cell=cell, **sizes)


@pytest.mark.parametrize(("style", "cell"), VARIANTS)
def test_shapes_for_a_ragged_batch(style, cell):
    model = tiny_model(style, cell)
    assert model([SOURCE, TARGET_IN]).shape == (2, 4, 40)
    annotations, *states = model.get_layer("encoder")(model.get_layer("source_embedding")(SOURCE))
    assert annotations.shape == (2, 5, 12) and all(state.shape == (2, 6) for state in states)
    assert len(states) == (2 if cell == "lstm" else 1)


@pytest.mark.parametrize(("style", "cell"), VARIANTS)
def test_a_sentence_gives_the_same_logits_alone_and_in_a_padded_batch(style, cell):
    model = tiny_model(style, cell)
    batched = model([SOURCE, TARGET_IN]).numpy()
    alone = model([SOURCE[1:, :3], TARGET_IN[1:, :2]]).numpy()
    np.testing.assert_allclose(batched[1, :2], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("style", "cell"), VARIANTS)
def test_decoding_step_reproduces_teacher_forcing(style, cell):
    """The same step function serves training and decoding: feeding the reference tokens one at a
    time through `Seq2SeqDecoding.step` gives the logits of the teacher-forced call."""
    model = tiny_model(style, cell)
    expected = model([SOURCE, TARGET_IN]).numpy()
    decoding = Seq2SeqDecoding(model)
    state = decoding.encode(tf.constant(SOURCE))
    for position in range(TARGET_IN.shape[1]):
        logits, state = decoding.step(tf.constant(TARGET_IN[:, position]), state)
        np.testing.assert_allclose(logits[0], expected[0, position], rtol=1e-4, atol=1e-5)
    assert (state["attention"].numpy()[1, 3:] == 0.0).all()  # padding gets zero attention


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bahdanau_step_feeds_the_cell_the_projection_of_its_context(cell):
    """Σ_j α_ij (W_c h_j) with W_c h_j projected once per sentence is W_c c_i: the paper's cell input."""
    from app.models.recurrence import project_inputs, recurrent_step

    model = tiny_model("bahdanau", cell)
    decoder, state = model.get_layer("decoder"), Seq2SeqDecoding(model).encode(tf.constant(SOURCE))
    embedded = model.get_layer("target_embedding")(tf.constant(TARGET_IN[:, 1]))
    projection = decoder.embed_inputs(embedded)
    args = (state["keys"], state["values"], state["annotations"], state["mask"])
    new_states, context, _ = decoder.step(projection, state["states"], *args)
    context_input = project_inputs(decoder.cell, context, decoder.embedding_rows, with_bias=False)
    expected = recurrent_step(decoder.cell, projection + context_input, state["states"])
    for got, want in zip(new_states, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_initial_state_comes_from_the_backward_encoder():
    model = tiny_model()
    encoder = model.get_layer("encoder")
    embedded = model.get_layer("source_embedding")(SOURCE[:1])
    annotations, state = encoder(embedded)
    backward_first = annotations[:, 0, 6:]  # backward half at position 1 = backward h_1
    np.testing.assert_allclose(state, encoder.bridge(backward_first), rtol=1e-5, atol=1e-6)


def test_loss_and_accuracy_ignore_padding():
    labels = tf.constant([[3, 4, 0, 0]])
    logits = tf.random.stateless_normal([1, 4, 10], seed=(1, 2))
    changed = tf.concat([logits[:, :2], logits[:, 2:] * 100 + 7], axis=1)  # only padded positions differ
    assert float(masked_cross_entropy(labels, logits)) == pytest.approx(
        float(masked_cross_entropy(labels, changed))
    )
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:, :2], logits[:, :2])
    assert float(masked_cross_entropy(labels, logits)) == pytest.approx(
        float(tf.reduce_mean(per_token)), rel=1e-6
    )
    perfect = tf.one_hot([[3, 4, 9, 9]], 10) * 10
    metric = MaskedTokenAccuracy()
    metric.update_state(labels, perfect)
    assert float(metric.result()) == 1.0
    metric.update_state(tf.constant([[5, 0]]), tf.one_hot([[6, 5]], 10))
    assert float(metric.result()) == pytest.approx(2 / 3)


@pytest.mark.parametrize("style", ["bahdanau", "luong"])
def test_mixed_bfloat16_trains_and_decodes_with_float32_weights(style):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_model(style)
        logits = model([SOURCE, TARGET_IN])
        assert all(weight.dtype == "float32" for weight in model.weights)
        decoding = Seq2SeqDecoding(model)
        state = decoding.encode(tf.constant(SOURCE))
        step_logits, _ = decoding.step(tf.constant(TARGET_IN[:, 0]), state)
        np.testing.assert_allclose(step_logits, tf.cast(logits[:, 0], tf.float32), rtol=0.05, atol=0.05)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_auto_precision_is_bfloat16_only_on_a_cpu_that_computes_it(tmp_path, monkeypatch):
    from app.models import precision

    with_bf16, plain = tmp_path / "bf16", tmp_path / "plain"
    with_bf16.write_text("flags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    plain.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert precision.cpu_computes_bfloat16(with_bf16) and not precision.cpu_computes_bfloat16(plain)
    assert not precision.cpu_computes_bfloat16(tmp_path / "missing")
    monkeypatch.setattr(precision, "cpu_computes_bfloat16", lambda: True)
    assert precision.training_policy("auto") == "mixed_bfloat16"
    assert precision.training_policy("float32") == "float32"
    monkeypatch.setattr(precision, "cpu_computes_bfloat16", lambda: False)
    assert precision.training_policy("auto") == "float32"
    assert precision.training_policy("mixed_bfloat16") == "mixed_bfloat16"


def test_a_bfloat16_model_is_served_by_a_float32_copy_of_its_weights():
    from app.config import load_config
    from app.export import float32_model

    sizes = ["model.embedding_dim=8", "model.units=6", "model.attention_units=5", "model.readout_units=4"]
    config = load_config("smoke", sizes)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trained = build_model(30, 40, **config.to_dict()["model"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    served = float32_model(trained, config)
    assert served.get_layer("decoder").compute_dtype == "float32"
    for got, want in zip(served.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    reference = build_model(30, 40, **config.to_dict()["model"])
    reference.set_weights(trained.get_weights())
    np.testing.assert_array_equal(served([SOURCE, TARGET_IN]), reference([SOURCE, TARGET_IN]))
    assert float32_model(reference, config) is reference  # already float32: served as it is
