"""What a model costs: FLOPs counted by hand from the layer sizes for every attention style, and the
step breakdown's parts."""

from __future__ import annotations

import pytest

from app.models.cost import (
    decode_gflop_per_sentence,
    decode_weight_megabytes,
    model_gflop_per_example,
    step_breakdown,
)
from app.models.styles import ATTENTION_STYLES

MODEL = {
    "embedding_dim": 2,
    "units": 3,
    "attention_units": 4,
    "readout_units": 5,
    "maxout_pieces": 2,
    "cell": "gru",
    "attention_style": "bahdanau",
}
DOT_MODEL = {**MODEL, "attention_style": "luong", "luong_score": "dot", "units": 4, "encoder_units": 2}


def gflop(multiply_adds: int) -> float:
    return 3 * 2 * multiply_adds / 1e9  # 2 FLOP per multiply-add; backward = 2 × forward


def test_flop_count_follows_the_layer_sizes():
    # per source token: 2 directions × 3·(2·3 + 3·3) + 2·3·4 = 114; bridge 9
    # per target token: attention 3·4 + 1·(4 + 6) = 22; cell 3·((2 + 6)·3 + 9) = 99;
    # readout (3 + 6 + 2)·5·2 + 5·7 = 145
    expected = 3 * 2 * (1 * 114 + 9 + 1 * (22 + 99 + 145)) / 1e9
    assert model_gflop_per_example(MODEL, 6, 7, 1.0, 1.0) == pytest.approx(expected)
    after = model_gflop_per_example({**MODEL, "attention_style": "additive_after"}, 6, 7, 1.0, 1.0)
    assert after == pytest.approx(expected - 3 * 2 * 3 * 6 * 3 / 1e9)  # the cell no longer reads c_i


# Counted by hand; sizes e = 2, H = 3 (so annotations 2H = 6), attention 4, readout 5 × 2 pieces,
# target vocabulary 7, GRU (3 gates). Encoder per source token 2 · 3·(2·3 + 3·3) = 90, bridge 3·3 = 9.
HAND_COUNTS = [
    # bahdanau: keys U_a h 6·4 = 24 per source; per target W_a s 3·4, per source position v_a 4 and
    # α h 6, cell 3·((2 + 6)·3 + 3·3) = 99, deep output (3 + 6 + 2)·5·2 = 110, vocabulary 5·7 = 35
    ("bahdanau", {}, 1, 1, 90 + 24 + 9 + (12 + 10) + 99 + 110 + 35),
    ("bahdanau", {}, 2, 3, 2 * (90 + 24) + 9 + 3 * (12 + 2 * 10 + 99 + 110 + 35)),
    ("bahdanau", {"cell": "lstm"}, 1, 1, 2 * 4 * 15 + 24 + 9 + 22 + 4 * 33 + 145),  # 4 gates
    # additive_after: the cell reads E y only, 3·(2·3 + 3·3) = 45
    ("additive_after", {}, 1, 1, 90 + 24 + 9 + 22 + 45 + 145),
    # none: nothing attended, no keys; the cell reads [E y; c] (99), the same readout (145)
    ("none", {}, 1, 1, 90 + 9 + 99 + 145),
    # luong general: keys W_a h 6·3 = 18 per source; per target s·key 3 and α h 6 per source
    # position, W_c [c; s] (6 + 3)·3 = 27, cell 45, no deep output: vocabulary from h̃, 3·7 = 21
    ("luong", {}, 1, 1, 90 + 18 + 9 + (3 + 6 + 27) + 45 + 21),
    ("luong", {}, 2, 3, 2 * (90 + 18) + 9 + 3 * (2 * (3 + 6) + 27 + 45 + 21)),
    # input feeding: the cell also reads h̃_{i-1}, 3·((2 + 3)·3 + 3·3) = 72
    ("luong", {"input_feeding": True}, 1, 1, 90 + 18 + 9 + 36 + 72 + 21),
]


@pytest.mark.parametrize(("style", "changes", "source_tokens", "target_tokens", "multiply_adds"), HAND_COUNTS)
def test_each_style_counts_its_own_flops(style, changes, source_tokens, target_tokens, multiply_adds):
    model = {**MODEL, "attention_style": style, **changes}
    count = model_gflop_per_example(model, 6, 7, source_tokens, target_tokens)
    assert count == pytest.approx(gflop(multiply_adds))


def test_every_registered_style_has_a_hand_count():
    assert {row[0] for row in HAND_COUNTS} == set(ATTENTION_STYLES)


def test_luong_dot_has_no_key_weights_and_counts_the_smaller_encoder():
    # H = 4, encoder 2 per direction (annotations 4 = H). Encoder per source 2 · 3·(2·2 + 2·2) = 48,
    # no keys (s·h_j); bridge 2·4 = 8; per target s·h 4 + α h 4, W_c (4 + 4)·4 = 32,
    # cell 3·(2·4 + 4·4) = 72, vocabulary 4·7 = 28
    expected = gflop(48 + 8 + (4 + 4 + 32) + 72 + 28)
    assert model_gflop_per_example(DOT_MODEL, 6, 7, 1.0, 1.0) == pytest.approx(expected)
    general = model_gflop_per_example({**DOT_MODEL, "luong_score": "general"}, 6, 7, 1.0, 1.0)
    assert general == pytest.approx(expected + gflop(4 * 4))  # W_a h_j per source token


@pytest.mark.parametrize(("style", "changes", "source_tokens", "target_tokens", "multiply_adds"), HAND_COUNTS)
def test_decoding_counts_the_forward_pass_of_training(
    style, changes, source_tokens, target_tokens, multiply_adds
):
    model = {**MODEL, "attention_style": style, **changes}
    assert decode_gflop_per_sentence(model, 7, source_tokens, target_tokens) == pytest.approx(
        2 * multiply_adds / 1e9
    )


def test_decoding_flops_grow_with_the_beam_and_shrink_with_a_shortlist():
    encoder_only = decode_gflop_per_sentence(MODEL, 7, 2, 0)
    per_hypothesis = decode_gflop_per_sentence(MODEL, 7, 2, 3) - encoder_only
    beam = decode_gflop_per_sentence(MODEL, 7, 2, 3, beam_width=4)
    assert beam == pytest.approx(encoder_only + 4 * per_hypothesis)  # each hypothesis steps
    shortlisted = decode_gflop_per_sentence(MODEL, 7, 2, 3, scored_vocab=4)
    assert per_hypothesis - (shortlisted - encoder_only) == pytest.approx(2 * 3 * 5 * (7 - 4) / 1e9)


def test_batch_one_decoding_reads_each_step_weights_once_per_step():
    # per source step both directions' recurrent kernels 2·3·3·3 = 54; once: both input kernels
    # 2·3·2·3 = 36 and the keys U_a 6·4 = 24, the bridge 9; per output step the bahdanau step's 266
    # (W_a 12, per source position 10, cell 99, deep output 110, vocabulary 35), all float32
    assert decode_weight_megabytes(MODEL, 7, 1, 1) == pytest.approx(4 * (54 + 36 + 24 + 9 + 266) / 1e6)
    assert decode_weight_megabytes(MODEL, 7, 2, 3) == pytest.approx(
        4 * (2 * 54 + 36 + 24 + 9 + 3 * (12 + 2 * 10 + 99 + 110 + 35)) / 1e6
    )
    assert decode_weight_megabytes(MODEL, 7, 1, 1, scored_vocab=3) == pytest.approx(
        4 * (54 + 36 + 24 + 9 + 266 - 5 * 4) / 1e6
    )


@pytest.mark.parametrize(
    "settings", [{"attention_style": "bahdanau"}, {"attention_style": "luong", "input_feeding": True}]
)
def test_step_breakdown_times_every_part(settings):
    sizes = {"embedding_dim": 4, "units": 4, "attention_units": 3, "readout_units": 3, "maxout_pieces": 2}
    parts = step_breakdown({**sizes, "cell": "gru", **settings}, 20, batch_size=2, length=3, repeats=2)
    assert set(parts) == {"full", "encoder", "decoder_recurrence", "readout_and_loss"}
    assert all(milliseconds > 0 for milliseconds in parts.values()), parts
