"""Encoder-decoder: shapes for ragged batches, masks end to end, the shared step, the masked loss."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.models.decoder import AttentionDecoder
from app.models.losses import (
    MaskedPerplexity,
    MaskedTokenAccuracy,
    label_smoothed_cross_entropy,
    masked_cross_entropy,
    perplexity,
    token_loss_sum,
)
from app.models.seq2seq import Seq2SeqDecoding, build_model
from app.models.styles import ATTENTION_STYLES, LuongStyle, SourceEncoding, make_style

SOURCE = np.array([[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]], np.int32)  # second sentence padded
TARGET_IN = np.array([[1, 11, 12, 13], [1, 14, 0, 0]], np.int32)
VARIANTS = [("bahdanau", "gru"), ("luong", "gru"), ("bahdanau", "lstm"), ("none", "gru")]
DOT = {"luong_score": "dot", "encoder_units": 3}  # annotations of 2 × 3 = units features
FEEDING = {"input_feeding": True}
# every registered style with both cells, and luong's options on top
EVERY_VARIANT = [
    pytest.param(style, cell, {}, id=f"{style}-{cell}")
    for style in ATTENTION_STYLES
    for cell in ("gru", "lstm")
] + [
    pytest.param("luong", cell, options, id=f"luong-{name}-{cell}")
    for name, options in (("dot", DOT), ("feeding", FEEDING), ("dot-feeding", {**DOT, **FEEDING}))
    for cell in ("gru", "lstm")
]


def tiny_model(style="bahdanau", cell="gru", **options):
    sizes = {
        "embedding_dim": 8,
        "units": 6,
        "attention_units": 5,
        "readout_units": 4,
        "dropout": 0.0,
        **options,
    }
    return build_model(30, 40, attention_style=style, cell=cell, **sizes)


def with_large_weights(model, seed=0):
    """Weights drawn larger than the initialisation's, so that attention is far from uniform and a
    step that differs from the teacher-forced run shows in the logits."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(scale=0.7, size=weight.shape) for weight in model.get_weights()])
    return model


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


@pytest.mark.parametrize(("style", "cell", "options"), EVERY_VARIANT)
def test_decoding_step_reproduces_teacher_forcing(style, cell, options):
    """The same step function serves training and decoding: feeding the reference tokens one at a
    time through `Seq2SeqDecoding.step` gives the logits of the teacher-forced call, for every
    registered style, both cells, luong's scores and input feeding."""
    model = with_large_weights(tiny_model(style, cell, **options))
    expected = model([SOURCE, TARGET_IN]).numpy()
    decoding = Seq2SeqDecoding(model)
    state = decoding.encode(tf.constant(SOURCE))
    for position in range(TARGET_IN.shape[1]):
        logits, state = decoding.step(tf.constant(TARGET_IN[:, position]), state)
        np.testing.assert_allclose(logits, expected[:, position], rtol=1e-4, atol=1e-4)
    attention = state["attention"].numpy()
    assert (attention[1, 3:] == 0.0).all()  # padding gets zero attention
    np.testing.assert_allclose(attention.sum(axis=-1), 0.0 if style == "none" else 1.0, atol=1e-6)
    assert len(state["states"]) == (2 if cell == "lstm" else 1) + bool(options.get("input_feeding"))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bahdanau_step_feeds_the_cell_the_projection_of_its_context(cell):
    """Σ_j α_ij (W_c h_j) with W_c h_j projected once per sentence is W_c c_i: the paper's cell input,
    with α_i computed from the previous state s_{i-1}."""
    from app.models.attention import weighted_sum
    from app.models.recurrence import project_inputs, recurrent_step

    model = tiny_model("bahdanau", cell)
    decoder, state = model.get_layer("decoder"), Seq2SeqDecoding(model).encode(tf.constant(SOURCE))
    embedded = model.get_layer("target_embedding")(tf.constant(TARGET_IN[:, 1]))
    projection = decoder.embed_inputs(embedded)
    source = SourceEncoding(*(state[key] for key in Seq2SeqDecoding.CONSTANT_KEYS))
    new_states, _, weights = decoder.style.step(decoder.cell, projection, embedded, state["states"], source)
    expected_weights = decoder.style.attention.attention_weights(
        state["states"][0], state["keys"], state["mask"]
    )
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-6)
    context = weighted_sum(weights, state["annotations"])  # c_i
    context_input = project_inputs(decoder.cell, context, decoder.embedding_rows, with_bias=False)
    expected = recurrent_step(decoder.cell, projection + context_input, state["states"])
    for got, want in zip(new_states, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def numpy_luong_decoder(decoder, embeddings, annotations, mask, initial_state):
    """Luong et al. (2015) for one sentence, written out: s_i = GRU(x_i, s_{i-1}) with x_i = E y_{i-1}
    (or [E y_{i-1}; h̃_{i-1}] with input feeding), e_ij = s_i^T W_a h_j, α_i = softmax over real j,
    c_i = Σ_j α_ij h_j, h̃_i = tanh(W_c [c_i; s_i]), logits = W_s h̃_i + b_s."""
    attention, style = decoder.style.attention, decoder.style
    W_a, W_c = attention.key_kernel.numpy().T, attention.attentional_kernel.numpy()
    W_s, b_s = (weight.numpy() for weight in decoder.output_projection.weights)
    state, attentional, logits = initial_state, np.zeros(decoder.units, "float32"), []
    for embedding in embeddings:
        inputs = np.concatenate([embedding, attentional]) if style.input_feeding else embedding
        state = decoder.cell(inputs[None], [state[None]])[0].numpy()[0]  # Keras's own GRU cell
        scores = np.where(mask, [state @ W_a @ h for h in annotations], -np.inf)
        weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        attentional = np.tanh(np.concatenate([weights @ annotations, state]) @ W_c)
        logits.append(attentional @ W_s + b_s)
    return np.array(logits)


@pytest.mark.parametrize("input_feeding", [False, True])
def test_luong_decoder_follows_the_equations(input_feeding):
    """The luong style is Luong's global attention (general score), its output layer reads h̃_i, and
    input feeding puts h̃_{i-1} into the next cell input."""
    style = make_style(4, attention_style="luong", input_feeding=input_feeding)
    decoder = AttentionDecoder(7, keras.layers.GRUCell(4, name="cell"), style)
    rng = np.random.default_rng(0)
    embeddings = tf.constant(rng.normal(size=(1, 3, 2)), tf.float32)  # [batch, tgt, embedding_dim]
    annotations = tf.constant(rng.normal(size=(1, 5, 6)), tf.float32)  # [batch, src, 2H]
    mask = tf.constant([[True, True, True, True, False]])
    initial_state = tf.constant(rng.normal(size=(1, 4)), tf.float32)
    decoder.build(embeddings.shape, annotations.shape)
    assert isinstance(decoder.style, LuongStyle)
    for weight in decoder.weights:  # larger than the initialisation, so that every term matters
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    logits = decoder(embeddings, annotations, [initial_state], annotations_mask=mask)
    expected = numpy_luong_decoder(
        decoder, embeddings[0].numpy(), annotations[0].numpy(), mask[0].numpy(), initial_state[0].numpy()
    )
    np.testing.assert_allclose(logits[0], expected, rtol=1e-4, atol=1e-5)


def test_styles_are_picked_by_name_and_bad_settings_are_refused():
    assert set(ATTENTION_STYLES) == {"bahdanau", "additive_after", "luong", "none"}
    for name, style_class in ATTENTION_STYLES.items():
        assert isinstance(tiny_model(name).get_layer("decoder").style, style_class)
    with pytest.raises(ValueError) as refused:  # the message lists the choices
        tiny_model("transformer")
    assert str(refused.value) == (
        "attention_style='transformer' is not one of ['bahdanau', 'additive_after', 'luong', 'none']"
    )
    with pytest.raises(ValueError) as refused:
        tiny_model("bahdanau", "rnn")
    assert str(refused.value) == "cell='rnn' is not one of ['gru', 'lstm']"
    with pytest.raises(
        ValueError,
        match=r"unknown model settings \['attention_unit'\]: the attention style reads \['attention_style'",
    ):
        build_model(30, 40, attention_unit=5)  # a misspelt setting is not silently dropped
    with pytest.raises(ValueError) as refused:
        tiny_model("bahdanau", input_feeding=True)
    assert str(refused.value) == (
        "luong_score and input_feeding apply to attention_style='luong' only; "
        "attention_style='bahdanau' takes the defaults (general, false)"
    )
    with pytest.raises(ValueError, match="luong' only"):
        tiny_model("none", luong_score="dot")
    with pytest.raises(ValueError, match="general"):
        tiny_model("luong", luong_score="concat")
    with pytest.raises(ValueError, match="encoder_units"):  # dot with 2 × 6 annotation features, units 6
        tiny_model("luong", luong_score="dot")


def recording(function, calls: list):
    """`function`, appending what each call returns to `calls`."""

    def recorded(*args, **kwargs):
        calls.append(function(*args, **kwargs))
        return calls[-1]

    return recorded


def test_the_variant_is_made_once_from_the_config_and_passed_as_objects(monkeypatch):
    """`build_model` turns the config's names into a cell kind and a style layer once; the encoder
    and the decoder hold those very objects (no layer below re-reads a name), and the cost model
    makes the same style from the same section."""
    from app.config import load_config
    from app.models import cost, seq2seq

    styles, cells = [], []
    monkeypatch.setattr(seq2seq, "make_style", recording(seq2seq.make_style, styles))
    monkeypatch.setattr(seq2seq, "recurrent_cell", recording(seq2seq.recurrent_cell, cells))
    overrides = ["model.attention_style=luong", "model.input_feeding=true", "model.cell=lstm"]
    sizes = ["model.units=6", "model.embedding_dim=8", "model.attention_units=5"]
    config = load_config("smoke", [*overrides, *sizes])
    model = build_model(30, 40, **config.model.architecture())
    assert len(styles) == 1 and len(cells) == 1
    decoder, encoder = model.get_layer("decoder"), model.get_layer("encoder")
    assert decoder.style is styles[0] and encoder.cell is cells[0]
    assert isinstance(decoder.style, LuongStyle) and decoder.style.input_feeding and decoder.style.units == 6
    assert (
        encoder.cell.name == "lstm"
        and type(decoder.cell) is keras.layers.LSTMCell
        and decoder.cell.units == 6
    )
    costed = cost._style(config.model.architecture())
    assert type(costed) is LuongStyle and costed.get_config() == decoder.style.get_config()


# Recorded from the model as built before the variant became objects (issue #30): `.weights.h5`
# files are read by these keys (attribute and class names) and shapes, so a run trained then
# still loads; `train.init_from` matches weights by these paths (the numbers Keras appends to
# repeated layer names removed).
WEIGHT_LAYOUTS = {
    ("bahdanau", "gru", ()): (
        """
        source_embedding/embeddings (30, 8) | target_embedding/embeddings (40, 8)
        encoder/bidirectional/forward_gru/gru_cell/kernel (8, 18)
        encoder/bidirectional/forward_gru/gru_cell/recurrent_kernel (6, 18)
        encoder/bidirectional/forward_gru/gru_cell/bias (2, 18)
        encoder/bidirectional/backward_gru/gru_cell/kernel (8, 18)
        encoder/bidirectional/backward_gru/gru_cell/recurrent_kernel (6, 18)
        encoder/bidirectional/backward_gru/gru_cell/bias (2, 18)
        encoder/bridge/kernel (6, 6) | encoder/bridge/bias (6,)
        decoder/cell/kernel (20, 18) | decoder/cell/recurrent_kernel (6, 18) | decoder/cell/bias (2, 18)
        decoder/deep_output/kernel (26, 8) | decoder/deep_output/bias (8,)
        decoder/attention/query_kernel (6, 5) | decoder/attention/key_kernel (12, 5)
        decoder/attention/key_bias (5,) | decoder/attention/score_vector (5,)
        decoder/output_projection/kernel (4, 40) | decoder/output_projection/bias (40,)
        """,
        """
        layers/attention_decoder/cell/vars/0 (20, 18) | layers/attention_decoder/cell/vars/1 (6, 18)
        layers/attention_decoder/cell/vars/2 (2, 18)
        layers/attention_decoder/output_projection/vars/0 (4, 40)
        layers/attention_decoder/output_projection/vars/1 (40,)
        layers/attention_decoder/style/attention/vars/0 (6, 5)
        layers/attention_decoder/style/attention/vars/1 (12, 5)
        layers/attention_decoder/style/attention/vars/2 (5,)
        layers/attention_decoder/style/attention/vars/3 (5,)
        layers/attention_decoder/style/deep_output/vars/0 (26, 8)
        layers/attention_decoder/style/deep_output/vars/1 (8,)
        layers/bidirectional_encoder/bidirectional/backward_layer/cell/vars/0 (8, 18)
        layers/bidirectional_encoder/bidirectional/backward_layer/cell/vars/1 (6, 18)
        layers/bidirectional_encoder/bidirectional/backward_layer/cell/vars/2 (2, 18)
        layers/bidirectional_encoder/bidirectional/forward_layer/cell/vars/0 (8, 18)
        layers/bidirectional_encoder/bidirectional/forward_layer/cell/vars/1 (6, 18)
        layers/bidirectional_encoder/bidirectional/forward_layer/cell/vars/2 (2, 18)
        layers/bidirectional_encoder/bridge/vars/0 (6, 6) | layers/bidirectional_encoder/bridge/vars/1 (6,)
        layers/embedding/vars/0 (30, 8) | layers/embedding_1/vars/0 (40, 8)
        """,
    ),
    ("luong", "lstm", (("encoder_units", 3), ("input_feeding", True), ("luong_score", "dot"))): (
        """
        source_embedding/embeddings (30, 8) | target_embedding/embeddings (40, 8)
        encoder/bidirectional/forward_lstm/lstm_cell/kernel (8, 12)
        encoder/bidirectional/forward_lstm/lstm_cell/recurrent_kernel (3, 12)
        encoder/bidirectional/forward_lstm/lstm_cell/bias (12,)
        encoder/bidirectional/backward_lstm/lstm_cell/kernel (8, 12)
        encoder/bidirectional/backward_lstm/lstm_cell/recurrent_kernel (3, 12)
        encoder/bidirectional/backward_lstm/lstm_cell/bias (12,)
        encoder/bridge/kernel (3, 6) | encoder/bridge/bias (6,)
        decoder/cell/kernel (14, 24) | decoder/cell/recurrent_kernel (6, 24) | decoder/cell/bias (24,)
        decoder/attention/attentional_kernel (12, 6)
        decoder/output_projection/kernel (6, 40) | decoder/output_projection/bias (40,)
        """,
        """
        layers/attention_decoder/cell/vars/0 (14, 24) | layers/attention_decoder/cell/vars/1 (6, 24)
        layers/attention_decoder/cell/vars/2 (24,)
        layers/attention_decoder/output_projection/vars/0 (6, 40)
        layers/attention_decoder/output_projection/vars/1 (40,)
        layers/attention_decoder/style/attention/vars/0 (12, 6)
        layers/bidirectional_encoder/bidirectional/backward_layer/cell/vars/0 (8, 12)
        layers/bidirectional_encoder/bidirectional/backward_layer/cell/vars/1 (3, 12)
        layers/bidirectional_encoder/bidirectional/backward_layer/cell/vars/2 (12,)
        layers/bidirectional_encoder/bidirectional/forward_layer/cell/vars/0 (8, 12)
        layers/bidirectional_encoder/bidirectional/forward_layer/cell/vars/1 (3, 12)
        layers/bidirectional_encoder/bidirectional/forward_layer/cell/vars/2 (12,)
        layers/bidirectional_encoder/bridge/vars/0 (3, 6) | layers/bidirectional_encoder/bridge/vars/1 (6,)
        layers/embedding/vars/0 (30, 8) | layers/embedding_1/vars/0 (40, 8)
        """,
    ),
}


@pytest.mark.parametrize("variant", list(WEIGHT_LAYOUTS), ids=lambda variant: f"{variant[0]}-{variant[1]}")
def test_weights_keep_the_layout_runs_were_saved_with(tmp_path, variant):
    import re

    import h5py

    style, cell, options = variant
    paths, h5_keys = (
        [entry.strip() for entry in text.replace("|", "\n").split("\n") if entry.strip()]
        for text in WEIGHT_LAYOUTS[variant]
    )
    model = tiny_model(style, cell, **dict(options))
    model([SOURCE, TARGET_IN])
    assert [
        re.sub(r"_\d+(?=/)", "", f"{weight.path} {tuple(weight.shape)}") for weight in model.weights
    ] == paths
    model.save_weights(tmp_path / "saved.weights.h5")
    saved = []
    with h5py.File(tmp_path / "saved.weights.h5") as weights_file:
        weights_file.visititems(
            lambda name, item: (
                saved.append(f"{name} {item.shape}") if isinstance(item, h5py.Dataset) else None
            )
        )
    assert saved == h5_keys
    reloaded = tiny_model(style, cell, **dict(options))
    reloaded.load_weights(tmp_path / "saved.weights.h5")
    np.testing.assert_array_equal(reloaded([SOURCE, TARGET_IN]), model([SOURCE, TARGET_IN]))


@pytest.mark.parametrize(
    ("style", "options"), [("bahdanau", {}), ("luong", {**DOT, **FEEDING}), ("none", {})]
)
def test_the_decoder_rebuilds_from_its_config(style, options):
    """Serialisable: `from_config(get_config())` gives the same layer, which computes the same logits."""
    model = tiny_model(style, "lstm", **options)
    decoder = model.get_layer("decoder")
    copy = AttentionDecoder.from_config(decoder.get_config())
    assert copy.get_config() == decoder.get_config()
    assert type(copy.style) is type(decoder.style) and type(copy.cell) is keras.layers.LSTMCell
    assert copy.style.get_config() == decoder.style.get_config()
    assert getattr(copy.style, "input_feeding", False) == bool(options.get("input_feeding"))
    encoder = model.get_layer("encoder")
    assert type(encoder).from_config(encoder.get_config()).cell is encoder.cell  # the same LSTM kind
    embedded_source = model.get_layer("source_embedding")(SOURCE)
    annotations, *initial_state = encoder(embedded_source)
    target = model.get_layer("target_embedding")(TARGET_IN)
    mask = tf.not_equal(SOURCE, 0)
    copy.build(target.shape, annotations.shape)
    copy.set_weights(decoder.get_weights())
    np.testing.assert_array_equal(
        copy(target, annotations, initial_state, annotations_mask=mask),
        decoder(target, annotations, initial_state, annotations_mask=mask),
    )


@pytest.mark.parametrize(
    ("style", "options"),
    [("luong", {}), ("luong", {"luong_score": "dot", "encoder_units": 8, **FEEDING}), ("none", {})],
    ids=["luong", "luong-dot-feeding", "none"],
)
def test_an_lstm_model_learns_a_tiny_batch_and_decodes_it(style, options):
    """Training lowers the loss on a fixed batch, and greedy and beam search then give back its targets."""
    from app.models.search import beam_search, greedy_search

    keras.utils.set_random_seed(1)
    target = np.array([[1, 11, 12, 13, 2], [1, 14, 15, 2, 0]], np.int32)  # start … end, 0-padded
    inputs, labels = (SOURCE, target[:, :-1]), target[:, 1:]
    model = tiny_model(style, "lstm", embedding_dim=16, units=16, **options)
    model.compile(keras.optimizers.Adam(0.03), loss=masked_cross_entropy)
    before = float(masked_cross_entropy(labels, model(inputs)))
    model.fit(tf.data.Dataset.from_tensors((inputs, labels)).repeat(), steps_per_epoch=60, verbose=0)
    after = float(masked_cross_entropy(labels, model(inputs)))
    assert after < 0.1 * before, (before, after)
    decoding = Seq2SeqDecoding(model)
    state, limits = decoding.encode(tf.constant(SOURCE)), tf.constant([6, 6])
    greedy = greedy_search(decoding.step, state, limits)
    beam = beam_search(decoding.step, state, limits, 3, constant_keys=Seq2SeqDecoding.CONSTANT_KEYS)
    for result in (greedy, beam):
        for tokens, expected in zip(result.tokens.numpy(), labels, strict=True):
            np.testing.assert_array_equal(tokens[: len(expected)], expected)  # … end id, then 0 (padding)


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


def test_perplexity_is_exp_of_the_loss_on_a_batch_and_pools_tokens_over_batches():
    labels = tf.constant([[3, 4, 0, 0], [5, 6, 7, 2]])
    logits = tf.random.stateless_normal([2, 4, 10], seed=(3, 4))
    metric = MaskedPerplexity()
    metric.update_state(labels, logits)
    assert float(metric.result()) == pytest.approx(math.exp(float(masked_cross_entropy(labels, logits))))
    loss_sum, tokens = token_loss_sum(labels, logits)
    assert float(tokens) == 6 and perplexity(float(loss_sum), float(tokens)) == pytest.approx(
        float(metric.result()), rel=1e-6
    )
    # a second batch of one token: pooled over the 7 tokens, not a mean of the two batches' means
    more_labels, more_logits = tf.constant([[8, 0]]), tf.random.stateless_normal([1, 2, 10], seed=(5, 6))
    metric.update_state(more_labels, more_logits)
    more_sum, _ = token_loss_sum(more_labels, more_logits)
    assert float(metric.result()) == pytest.approx(
        math.exp((float(loss_sum) + float(more_sum)) / 7), rel=1e-6
    )


def test_label_smoothing_mixes_the_uniform_cross_entropy_in_and_ignores_padding():
    labels = tf.constant([[3, 4, 0]])
    logits = tf.random.stateless_normal([1, 3, 10], seed=(7, 8))
    log_probs = tf.nn.log_softmax(logits)[0, :2]  # the two real tokens
    nll = -np.array([log_probs[0, 3], log_probs[1, 4]])
    uniform = -tf.reduce_mean(log_probs, axis=-1).numpy()
    smoothed = label_smoothed_cross_entropy(0.1)
    assert float(smoothed(labels, logits)) == pytest.approx(np.mean(0.9 * nll + 0.1 * uniform), rel=1e-6)
    assert label_smoothed_cross_entropy(0.0) is masked_cross_entropy
    # the smoothed optimum is not one-hot: a confident right answer costs more than a softer one
    confident, softer = tf.one_hot([[3]], 10) * 30.0, tf.one_hot([[3]], 10) * 5.0
    assert float(smoothed(tf.constant([[3]]), confident)) > float(smoothed(tf.constant([[3]]), softer))


@pytest.mark.parametrize(
    ("style", "options"), [*((style, {}) for style in ATTENTION_STYLES), ("luong", FEEDING)]
)
def test_mixed_bfloat16_trains_and_decodes_with_float32_weights(style, options):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_model(style, **options)
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
    assert precision.training_policy("mixed_float16") == "mixed_float16"


def test_the_log_says_which_precision_auto_chose_and_why(tmp_path, monkeypatch):
    from app.models import precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    assert precision.cpu_bfloat16_flags(cpuinfo) == ["avx512_bf16", "amx_bf16"]
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(precision, "cpu_bfloat16_flags", lambda *_: ["avx512_bf16"])
    assert precision.describe_policy("auto") == (
        "Precision: mixed_bfloat16 (train.precision=auto: no GPU; this CPU has avx512_bf16)"
    )
    assert precision.describe_policy("float32") == "Precision: float32 (train.precision)"
    monkeypatch.setattr(precision, "cpu_bfloat16_flags", lambda *_: [])
    assert precision.describe_policy("auto") == (
        "Precision: float32 (train.precision=auto: no GPU and no bfloat16 instructions in this CPU)"
    )


@pytest.mark.parametrize(
    ("capabilities", "policy"),
    [([(8, 0)], "mixed_float16"), ([(7, 0), (9, 0)], "mixed_float16"), ([(8, 0), (6, 1)], "float32")],
)
def test_auto_precision_is_float16_on_gpus_with_tensor_cores(monkeypatch, capabilities, policy):
    from app.models import precision

    monkeypatch.setattr(precision, "cpu_computes_bfloat16", lambda: True)  # a GPU decides, not the CPU
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: ["gpu"] if kind == "GPU" else []
    )
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: capabilities)
    assert precision.training_policy("auto") == policy


def test_a_bfloat16_model_is_served_by_a_float32_copy_of_its_weights():
    from app.config import load_config
    from app.translator import float32_model

    sizes = ["model.embedding_dim=8", "model.units=6", "model.attention_units=5", "model.readout_units=4"]
    config = load_config("smoke", sizes)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trained = build_model(30, 40, **config.model.architecture())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    served = float32_model(trained, config)
    assert served.get_layer("decoder").compute_dtype == "float32"
    for got, want in zip(served.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    reference = build_model(30, 40, **config.model.architecture())
    reference.set_weights(trained.get_weights())
    np.testing.assert_array_equal(served([SOURCE, TARGET_IN]), reference([SOURCE, TARGET_IN]))
    assert float32_model(reference, config) is reference  # already float32: served as it is
