"""What a model costs: training and decoding FLOPs counted from the layer sizes, the weights a
batch-1 decoding reads, and where a training step's time goes.

The benchmark reports them (`attend bench`), and bounds its speed targets with them: no schedule
of the same arithmetic runs faster than the host's matmul peak allows. They live beside the model
because they follow its layers and must change with them.
"""

from __future__ import annotations

import statistics
import time

import tensorflow as tf

from app.models.losses import masked_cross_entropy
from app.models.recurrence import recurrent_cell
from app.models.seq2seq import build_model
from app.models.styles import STYLE_SETTINGS, DecoderStyle, make_style
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
    per_source, bridge, per_target = _multiply_adds(model, target_vocab, source_tokens)
    return 3 * 2 * (source_tokens * per_source + bridge + target_tokens * per_target) / 1e9


def decode_gflop_per_sentence(
    model: dict,
    target_vocab: int,
    source_tokens: float,
    output_tokens: float,
    beam_width: int = 1,
    scored_vocab: float | None = None,
) -> float:
    """Forward GFLOP of decoding one sentence, counted as `model_gflop_per_example` counts (its
    forward third): the encoder over `source_tokens` (end marker included) once, and a decoder step
    per output token (end included) for each of the `beam_width` hypotheses, each scoring
    `scored_vocab` pieces (a shortlist's candidates; the whole vocabulary by default)."""
    scored = target_vocab if scored_vocab is None else scored_vocab
    per_source, bridge, per_target = _multiply_adds(model, scored, source_tokens)
    return 2 * (source_tokens * per_source + bridge + beam_width * output_tokens * per_target) / 1e9


def decode_weight_megabytes(
    model: dict,
    target_vocab: int,
    source_tokens: float,
    output_tokens: float,
    scored_vocab: float | None = None,
) -> float:
    """Megabytes a batch-1 greedy decoding of one sentence reads at least, in float32: at batch 1
    every product is a matrix-vector product whose weights are read once per step, so each
    multiply-add of a decoder step and of an encoder step's recurrent product reads one float32.
    The encoder's input products and the source projections cover all positions in one product, so
    their weights count once; embedding lookups and element-wise work are left out."""
    embedding, encoder_units, _, gates = _sizes(model)
    recurrent = 2 * gates * encoder_units * encoder_units  # both directions, per source step
    once = 2 * gates * embedding * encoder_units + _style(model).source_multiply_adds(2 * encoder_units)
    scored = target_vocab if scored_vocab is None else scored_vocab
    _, bridge, per_target = _multiply_adds(model, scored, source_tokens)
    return 4 * (source_tokens * recurrent + once + bridge + output_tokens * per_target) / 1e6


def _sizes(model: dict) -> tuple[int, int, int, int]:
    """(embedding, encoder units per direction, decoder units, gates of the cell)."""
    units = model["units"]
    return (
        model["embedding_dim"],
        model.get("encoder_units") or units,
        units,
        recurrent_cell(model["cell"]).gates,
    )


def _style(model: dict) -> DecoderStyle:
    """The style `build_model` makes from the same section (never built: only its sizes are read)."""
    return make_style(model["units"], **{key: value for key, value in model.items() if key in STYLE_SETTINGS})


def _multiply_adds(model: dict, target_vocab: float, source_tokens: float) -> tuple[float, int, float]:
    """Forward multiply-adds: (per source token, the bridge once, per target token scoring
    `target_vocab` pieces)."""
    embedding, encoder_units, units, gates = _sizes(model)
    annotation_dim, style = 2 * encoder_units, _style(model)

    def cell(inputs: int, size: int) -> int:
        return gates * (inputs * size + size * size)

    per_source = 2 * cell(embedding, encoder_units) + style.source_multiply_adds(annotation_dim)
    per_target = (
        style.target_multiply_adds(embedding, annotation_dim, source_tokens)
        + cell(style.cell_input_size(embedding, annotation_dim), units)
        + style.readout_size * target_vocab
    )
    bridge = encoder_units * units  # s_0 = tanh(W_s backward h_1)
    return per_source, bridge, per_target


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
