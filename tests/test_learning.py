"""Learning end to end: a tiny model memorises a tiny real corpus through the whole stack
(SentencePiece → tf.data → Bahdanau model → model.fit → in-graph greedy decoding → detokenizer)."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from app.config import load_config
from app.data.pipeline import make_dataset
from app.data.tokenizer import SubwordTokenizer, read_side, train_sentencepiece
from app.models.losses import MaskedTokenAccuracy, masked_cross_entropy
from app.models.seq2seq import build_model
from app.translator import build_translator
from tests.conftest import BIBLE_SAMPLE

PAIRS = 24


@pytest.mark.slow
# Luong's readout is h̃ alone (no E y_{i-1}, no deep output): at 64 units it memorises slowly
@pytest.mark.parametrize(("style", "units"), [("bahdanau", 64), ("luong", 128)])
def test_tiny_model_overfits_a_tiny_corpus(tmp_path, style, units):
    keras.utils.set_random_seed(7)
    lines = sorted(BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines(), key=len)[:PAIRS]
    corpus = tmp_path / "tiny.tsv"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sources, references = list(read_side(corpus, 0)), list(read_side(corpus, 1))
    tokenizers = tuple(SubwordTokenizer(train_sentencepiece(side, 400)) for side in (sources, references))
    dataset = make_dataset(corpus, *tokenizers, batch_size=PAIRS, max_source_tokens=64, max_target_tokens=64)

    model = build_model(
        tokenizers[0].vocab_size,
        tokenizers[1].vocab_size,
        embedding_dim=48,
        units=units,
        attention_units=32,
        readout_units=64,
        attention_style=style,
        dropout=0.0,
    )
    model.compile(
        keras.optimizers.Adam(0.01, clipnorm=1.0), loss=masked_cross_entropy, metrics=[MaskedTokenAccuracy()]
    )
    history = model.fit(dataset.repeat(), steps_per_epoch=10, epochs=20, verbose=0)
    assert history.history["token_accuracy"][-1] > 0.97

    vocab_dir = tmp_path / "vocab"  # assets are not needed for in-process decoding
    translator = build_translator(model, load_config("smoke"), vocab_dir, tokenizers)
    translations = [t.decode() for t in translator.translate(tf.constant(sources))["translation"].numpy()]
    exact = sum(
        hypothesis == reference for hypothesis, reference in zip(translations, references, strict=True)
    )
    assert exact >= 0.9 * PAIRS, list(zip(references, translations, strict=True))[:5]
