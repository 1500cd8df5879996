"""Warm-up records (`app.warmup`): TF Serving's `assets.extra/tf_serving_warmup_requests` in every
export, built from the export's own signatures, and read back as `attend serve` replays them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from app.warmup import (
    MAX_RECORDS,
    WARMUP_FILE,
    padded_shapes,
    prediction_log,
    read_warmup_requests,
    texts_by_padded_length,
    write_warmup_requests,
)

SIGNATURES = ("serving_default", "translate_ids", "translate_nbest", "translate_with_attention")


def word_ids(text: tf.Tensor) -> tf.Tensor:
    """A stand-in tokenizer: one id per word plus the end id, 0-padded."""
    words = tf.strings.split(text)
    ids = tf.ones_like(words, tf.int32) * 5
    return tf.concat([ids, tf.ones([tf.shape(text)[0], 1], tf.int32) * 2], axis=1).to_tensor(0)


class ToyModule(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def text(self, text):
        return {"length": tf.strings.length(text)}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="source_ids")])
    def ids(self, source_ids):
        return {"total": tf.reduce_sum(source_ids, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32, name="temperature")])
    def scalar(self, temperature):
        return {"twice": 2 * temperature}


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory):
    directory = tmp_path_factory.mktemp("toy") / "export"
    module = ToyModule()
    signatures = {
        "serving_default": module.text.get_concrete_function(),
        "translate_ids": module.ids.get_concrete_function(),
        "sample": module.scalar.get_concrete_function(),
    }
    tf.saved_model.save(module, str(directory), signatures=signatures)
    return directory


def test_padded_shapes_are_every_power_of_two_batch_and_source_length_the_compiled_search_meets():
    shapes = padded_shapes(16, 8, 256)
    assert {batch for batch, _ in shapes} == {1, 2, 4, 8, 16}
    assert {length for _, length in shapes} == {8, 16, 32, 64, 128, 256}
    assert len(shapes) == 30
    assert max(length for _, length in padded_shapes(8, 8, 100)) == 128  # 100 tokens pad to 128
    assert padded_shapes(8, 8, 5) == [(1, 8), (2, 8), (4, 8), (8, 8)]


def test_texts_reach_each_padded_length():
    lengths = {8, 16, 32}
    texts = texts_by_padded_length(word_ids, ["uno dos tres", "cuatro cinco"], lengths)
    counts = {
        length: [int(np.count_nonzero(word_ids(tf.constant([t]))[0])) for t in found]
        for length, found in texts.items()
    }
    assert set(counts) == lengths
    assert all(0 < c <= 8 for c in counts[8])
    assert all(8 < c <= 16 for c in counts[16]) and all(16 < c <= 32 for c in counts[32])


def test_records_cover_what_can_be_synthesised_and_read_back_as_prediction_logs(toy_export):
    said: list[str] = []
    shapes = [(1, 8), (4, 16)]
    written = write_warmup_requests(
        toy_export,
        word_ids,
        ["Y lloró Jesús.", "Hola."],
        model_name="toy",
        padded_shapes=shapes,
        xla_max_batch=4,
        log=said.append,
    )
    assert any("'sample' skipped" in line for line in said)  # a float scalar: not synthesised
    records = list(tf.data.TFRecordDataset(str(toy_export / WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == len(written) == 2 + len(shapes) + 1  # each signature, each shape, one above
    first = prediction_log_pb2.PredictionLog.FromString(records[0])
    assert first.predict_log.request.model_spec.name == "toy"
    assert first.predict_log.request.model_spec.signature_name == "serving_default"
    read = read_warmup_requests(toy_export)
    assert [r.signature_name for r in read] == [r.signature_name for r in written]
    ids = next(r for r in read if r.signature_name == "translate_ids").inputs["source_ids"]
    assert ids.dtype == np.int32 and ((ids == 2).sum(axis=1) == 1).all()  # the tokenizer's ids, end ids
    shaped = [r.inputs["text"] for r in read[2:]]
    assert [len(batch) for batch in shaped] == [1, 4, 5]
    assert int(np.count_nonzero(word_ids(tf.constant(shaped[1][:1]))[0])) > 8  # pads to 16


def test_a_signature_whose_synthesised_request_fails_its_check_is_left_out(toy_export):
    said: list[str] = []

    def check(request):
        if request.signature_name == "translate_ids":
            raise ValueError("ids out of range")

    written = write_warmup_requests(toy_export, word_ids, ["Hola."], check=check, log=said.append)
    assert [r.signature_name for r in written] == ["serving_default"]
    assert any("'translate_ids' skipped (ValueError: ids out of range)" in line for line in said)


def test_reading_refuses_other_log_types_and_more_than_tf_servings_limit(tmp_path):
    path = tmp_path / WARMUP_FILE
    path.parent.mkdir()
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(prediction_log_pb2.PredictionLog(classify_log={}).SerializeToString())
    with pytest.raises(ValueError, match="classify_log, not a predict_log"):
        read_warmup_requests(tmp_path)
    from app.warmup import WarmupRequest

    record = prediction_log(WarmupRequest("serving_default", {"text": np.array([b"a"], dtype=object)}))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(MAX_RECORDS + 1):
            writer.write(record.SerializeToString())
    with pytest.raises(ValueError, match="more than 1000"):
        read_warmup_requests(tmp_path)
    assert read_warmup_requests(tmp_path / "elsewhere") == []


def test_an_export_carries_warm_up_records_for_every_serving_signature(trained_run):
    export = trained_run / "export"
    requests = read_warmup_requests(export)
    assert set(SIGNATURES) <= {request.signature_name for request in requests}
    assert len(requests) <= MAX_RECORDS
    loaded = tf.saved_model.load(str(export))
    for request in requests:  # each replays against the export as a server would
        loaded.signatures[request.signature_name](**{k: tf.constant(v) for k, v in request.inputs.items()})
    card = json.loads((export / "model_card.json").read_text())
    assert {"SentencepieceOp", "SentencepieceTokenizeOp", "SentencepieceDetokenizeOp"} <= set(
        card["export"]["required_ops"]
    )
