"""Tied embeddings (`model.tie_embeddings`, Press & Wolf 2017) and the joint vocabulary
(`tokenizer.joint`): one variable where there were two or three, and everything that reads the
model (weights files, shortlists, mixed precision, transfer, the export) still works."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.config import load_config
from app.data.tokenizer import fit_tokenizers, vocabulary
from app.models.seq2seq import Seq2SeqDecoding, build_model
from app.recipe.transfer import initialize_from, read_parent
from app.run import RunDir
from tests.conftest import BIBLE_SAMPLE, tiny_overrides

VOCAB, DIM = 40, 8
SOURCE = np.array([[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]], np.int32)
TARGET_IN = np.array([[1, 11, 12, 13], [1, 14, 0, 0]], np.int32)
TARGET_OUT = np.array([[11, 12, 13, 2], [14, 2, 0, 0]], np.int32)


def tiny(tie="none", source_vocab=VOCAB, **options):
    sizes = {"embedding_dim": DIM, "units": 6, "attention_units": 5, "readout_units": DIM, "dropout": 0.0}
    return build_model(source_vocab, VOCAB, tie_embeddings=tie, **{**sizes, **options})


def vocabulary_matrices(model) -> list[str]:
    return [weight.path for weight in model.weights if tuple(weight.shape) in ((VOCAB, DIM), (DIM, VOCAB))]


def test_target_tying_makes_the_output_kernel_the_target_embedding_variable():
    untied, tied = tiny("none"), tiny("target")
    assert len(vocabulary_matrices(tied)) == len(vocabulary_matrices(untied)) - 1 == 2
    assert tied.count_params() == untied.count_params() - VOCAB * DIM
    projection = tied.get_layer("decoder").output_projection
    embeddings = tied.get_layer("target_embedding").embeddings
    assert projection.embedding.embeddings is embeddings
    assert [weight.path for weight in projection.weights] == ["decoder/output_projection/bias"]  # kept
    assert sum(weight is embeddings for weight in tied.trainable_weights) == 1

    # a gradient step reaches the matrix through both uses: pieces absent from the decoder's input
    # (20..39) get a gradient only through the projection, and the projection moves with the step
    with tf.GradientTape() as tape:
        logits = tied([SOURCE, TARGET_IN])
        loss = keras.losses.sparse_categorical_crossentropy(TARGET_OUT, logits, from_logits=True)
        loss = tf.reduce_mean(loss)
    gradient = tf.convert_to_tensor(tape.gradient(loss, embeddings))
    assert np.abs(gradient.numpy()[20:]).sum() > 0
    before = projection.kernel.numpy()
    keras.optimizers.SGD(1.0).apply([gradient], [embeddings])
    np.testing.assert_array_equal(projection.kernel.numpy(), embeddings.numpy().T)
    assert not np.allclose(projection.kernel.numpy(), before)


def test_all_tying_shares_one_matrix_between_the_languages():
    untied, tied = tiny("none"), tiny("all")
    assert (
        len(vocabulary_matrices(tied)) == 1 and tied.count_params() == untied.count_params() - 2 * VOCAB * DIM
    )
    source = tied.get_layer("source_embedding")
    assert source.embeddings is tied.get_layer("target_embedding").embeddings and not source.weights
    assert source.input_dim == VOCAB  # what the float32 serving copy reads
    # the source lookup is the shared matrix's rows, and padding is masked as before
    np.testing.assert_array_equal(source(SOURCE)[0, 0], source.embeddings.numpy()[5])
    np.testing.assert_array_equal(source.compute_mask(SOURCE), SOURCE != 0)
    with pytest.raises(
        ValueError, match=r"source vocabulary has 30 pieces and the target 40.*tokenizer\.joint"
    ):
        tiny("all", source_vocab=30)


def test_the_untied_default_keeps_its_own_output_kernel_and_seeds():
    sizes = {"embedding_dim": DIM, "units": 6, "attention_units": 5, "readout_units": DIM, "dropout": 0.0}
    keras.utils.set_random_seed(3)
    today = build_model(VOCAB, VOCAB, **sizes)  # no tie_embeddings: the config's default
    keras.utils.set_random_seed(3)
    none = tiny("none")
    assert len(vocabulary_matrices(none)) == 3 and "decoder/output_projection/kernel" in vocabulary_matrices(
        none
    )
    for got, want in zip(none.get_weights(), today.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("tie", ["target", "all"])
def test_tied_weights_save_and_load_and_a_shortlist_gathers_the_tied_columns(tmp_path, tie):
    model = tiny(tie)
    logits = model([SOURCE, TARGET_IN])
    model.save_weights(tmp_path / "model.weights.h5")
    assert json.loads(model.to_json())["config"]["layers"]  # TensorBoard's model config, as untied
    reloaded = tiny(tie)
    reloaded.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(reloaded([SOURCE, TARGET_IN]), logits, rtol=1e-6)

    decoding = Seq2SeqDecoding(reloaded)
    state = decoding.encode(tf.constant(SOURCE))
    candidates = tf.constant([0, 1, 2, 3, 11, 12, 14, 39])
    full, _ = decoding.step(tf.constant([11, 14]), state)
    short, _ = decoding.shortlisted_step(candidates)(tf.constant([4, 6]), state)  # 11 and 14
    np.testing.assert_allclose(short, tf.gather(full, candidates, axis=1), rtol=1e-5, atol=1e-6)


def test_a_tied_model_trains_and_decodes_in_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny("all")
        logits = model([SOURCE, TARGET_IN])
        assert logits.dtype == "bfloat16" and all(weight.dtype == "float32" for weight in model.weights)
        decoding = Seq2SeqDecoding(model)
        step_logits, _ = decoding.step(tf.constant(TARGET_IN[:, 0]), decoding.encode(tf.constant(SOURCE)))
        np.testing.assert_allclose(step_logits, tf.cast(logits[:, 0], tf.float32), rtol=0.05, atol=0.05)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_bfloat16_tied_model_is_served_by_a_float32_copy_that_is_tied_too():
    from app.translator import float32_model

    config = load_config("smoke", ["model.tie_embeddings=all", "tokenizer.joint=true"])
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trained = build_model(VOCAB, VOCAB, **config.model.architecture())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    served = float32_model(trained, config)
    assert served.get_layer("decoder").compute_dtype == "float32"
    for got, want in zip(served.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    shared = served.get_layer("target_embedding").embeddings
    assert served.get_layer("source_embedding").embeddings is shared
    assert served.get_layer("decoder").output_projection.embedding.embeddings is shared


def test_tying_refuses_a_readout_of_another_size_and_all_without_a_joint_vocabulary():
    with pytest.raises(ValueError, match=r"model\.readout_units=4.*model\.embedding_dim=8"):
        tiny("target", readout_units=4)
    with pytest.raises(ValueError, match=r"model\.units=6.*model\.embedding_dim=8"):
        tiny("target", attention_style="luong", readout_units=256)
    with pytest.raises(
        ValueError, match=r"model\.readout_units == model\.embedding_dim.*set model\.readout_units=32"
    ):
        load_config("smoke", ["model.tie_embeddings=target", "model.readout_units=16"])
    with pytest.raises(ValueError, match=r"tie_embeddings=all .* tokenizer\.joint=true"):
        load_config("smoke", ["model.tie_embeddings=all"])
    with pytest.raises(ValueError, match=r"tokenizer\.joint=true .* give both the same size"):
        load_config("smoke", ["tokenizer.joint=true", "tokenizer.target_vocab_size=3000"])
    with pytest.raises(ValueError, match="not one of"):
        load_config("smoke", ["model.tie_embeddings=both"])
    config = load_config("smoke", ["model.tie_embeddings=all", "tokenizer.joint=true"])
    assert config.model.architecture()["tie_embeddings"] == "all"
    assert load_config("smoke").model.tie_embeddings == "none" and not load_config("smoke").tokenizer.joint


def test_a_joint_vocabulary_is_one_model_of_both_languages(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text(BIBLE_SAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    settings = {
        "source_vocab_size": 400,
        "target_vocab_size": 400,
        "model_type": "unigram",
        "character_coverage": 1.0,
        "max_training_sentences": None,
    }
    joint = fit_tokenizers(train, tmp_path / "joint", {**settings, "joint": True}, log=lambda *_: None)
    separate = fit_tokenizers(train, tmp_path / "separate", settings, log=lambda *_: None)
    assert joint["source"].read_bytes() == joint["target"].read_bytes()
    assert (tmp_path / "joint/source.vocab").read_bytes() == (tmp_path / "joint/target.vocab").read_bytes()
    pieces, spanish, english = (set(vocabulary(path)) for path in (joint["source"], *separate.values()))
    # the joint model holds pieces only each language's own model learnt
    assert pieces & (spanish - english) and pieces & (english - spanish)


def test_transfer_refuses_the_weights_that_another_tying_removes(trained_run):
    parent = read_parent(RunDir(trained_run))  # untied
    config = load_config("smoke", tiny_overrides(**{"model.tie_embeddings": "target"}))
    sizes = [len(parent.vocabularies[side]) for side in ("source", "target")]
    model = build_model(*sizes, **config.model.architecture())
    with pytest.raises(
        ValueError, match=r"tie_embeddings=none, this model target.*train\.init_parts=encoder or embeddings"
    ):
        initialize_from(model, parent, "all", parent.vocabularies)
    report = initialize_from(model, parent, "embeddings", parent.vocabularies)
    assert report["copied"] == ["source_embedding/embeddings", "target_embedding/embeddings"]


RELOAD = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    assert not any(name == "app" or name.startswith("app.") for name in sys.modules)
    model = tf.saved_model.load(sys.argv[1])
    out = model.signatures["serving_default"](text=tf.constant(["En el principio creó Dios los cielos."]))
    print(json.dumps([text.decode() for text in out["translation"].numpy()]))
    """
)


@pytest.mark.slow
def test_a_run_with_all_tied_and_a_joint_vocabulary_trains_reports_and_exports(tmp_path):
    from app.export import export_run
    from app.train import train

    overrides = {"tokenizer.joint": "true", "model.tie_embeddings": "all", "train.epochs": 1}
    config = load_config("smoke", tiny_overrides(**overrides))
    metrics = train(config, tmp_path / "run", tmp_path / "data", log=lambda *_: None)
    assert [path.name for path in tmp_path.glob("data/*/vocab-*")] == ["vocab-unigram-400-400-joint"]
    vocab = tmp_path / "run" / "vocab"
    assert (vocab / "source.model").read_bytes() == (vocab / "target.model").read_bytes()
    size = len(vocabulary(vocab / "source.model"))
    untied = build_model(size, size, **{**config.model.architecture(), "tie_embeddings": "none"})
    assert metrics["parameters"] == untied.count_params() - 2 * size * config.model.embedding_dim

    export_run(tmp_path / "run", log=lambda *_: None)
    export = tmp_path / "run" / "export"
    assert (export / "assets" / "source.model").read_bytes() == (
        export / "assets" / "target.model"
    ).read_bytes()
    reloaded = subprocess.run([sys.executable, "-c", RELOAD, str(export)], capture_output=True, text=True)
    assert reloaded.returncode == 0, reloaded.stderr[-2000:]
    assert len(json.loads(reloaded.stdout.strip().splitlines()[-1])) == 1
