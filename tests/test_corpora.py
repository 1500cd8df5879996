"""Several training corpora (`data.corpora`), weighted mixing, and the synthetic tag
(`train.tag_synthetic`): config, preparation without leakage, mixing weights, report, model card."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
import tensorflow as tf

from app.config import ExtraCorpus, load_config, load_saved_config, save_config
from app.data.corpora import SYNTHETIC_TAG
from app.data.mixing import MixedCorpus, mix, mixed_pairs
from app.data.pipeline import count_batches, make_dataset
from app.data.prepare import corpora_report, filter_report, prepare_data, tokenizer_settings
from app.recipe import epoch_steps, make_dev_set, make_train_set
from tests.conftest import BIBLE_SAMPLE, tiny_overrides

DOCS = Path(__file__).parent.parent / "docs" / "training.md"


def _extra_overrides(extra: Path, **more: object) -> list[str]:
    corpora = f"[{{corpus: tsv, tsv_path: '{extra}', weight: 0.5, synthetic: true}}]"
    return tiny_overrides(**{"data.corpora": corpora, **more})


@pytest.fixture(scope="module")
def extra_tsv(tmp_path_factory) -> Path:
    """The first 300 fixture pairs (many in the main corpus's dev/test), two bad lines, one duplicate."""
    lines = BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines()[:300]
    path = tmp_path_factory.mktemp("extra") / "synthetic.tsv"
    path.write_text("\n".join([*lines, "no tab on this line", "\tempty source", lines[5]]) + "\n", "utf-8")
    return path


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, extra_tsv):
    """(config, prepared data, log lines) with one synthetic extra corpus and the tag on."""
    config = load_config("smoke", _extra_overrides(extra_tsv, **{"train.tag_synthetic": "true"}))
    lines: list[str] = []
    data = prepare_data(config, tmp_path_factory.mktemp("data"), log=lines.append)
    return config, data, lines


# === Config ===


def test_corpora_setting_parses_from_overrides_and_round_trips(tmp_path):
    config = load_config(
        "smoke",
        [
            "data.corpora=[{corpus: tsv, tsv_path: a.tsv, weight: 0.25, synthetic: true}, {corpus: dates}]",
            "data.weight=2",
        ],
    )
    assert config.data.weight == 2.0
    assert config.data.corpora == (
        ExtraCorpus(corpus="tsv", tsv_path="a.tsv", weight=0.25, synthetic=True),
        ExtraCorpus(corpus="dates"),
    )
    save_config(config, tmp_path / "config.yaml")
    assert load_saved_config(tmp_path / "config.yaml") == config
    assert load_config("smoke").data.corpora == ()  # the default: one corpus, as before


def test_config_saved_before_0_3_0_takes_one_corpus_and_no_tag(tmp_path):
    config = load_config("smoke")
    save_config(config, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text(encoding="utf-8").replace("attend 0.4.0", "attend 0.2.0", 1)
    kept = [line for line in text.splitlines() if line.strip() not in ("weight: 1.0", "corpora: []")]
    kept = [line for line in kept if not line.strip().startswith("tag_synthetic:")]
    assert len(kept) == len(text.splitlines()) - 3
    (tmp_path / "config.yaml").write_text("\n".join(kept) + "\n", encoding="utf-8")
    assert load_saved_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize(
    "value, message",
    [
        ("[{corpus: tsv}]", r"data.corpora\[0\]: corpus tsv needs tsv_path"),
        ("[{corpus: tsv, tsv_path: a.tsv, weight: 0}]", r"data.corpora\[0\].weight: expected greater than 0"),
        ("[{corpus: dates}, {corpus: nope}]", r"data.corpora\[1\].corpus='nope' is not one of"),
        ("[{corpus: dates, wieght: 2}]", r"Unknown key\(s\) \['wieght'\] in data.corpora\[0\]"),
        ("[{corpus: dates, synthetic: 3}]", r"data.corpora\[0\].synthetic: expected true or false"),
        ("3", r"data.corpora: expected a list of corpora"),
    ],
)
def test_corpora_setting_refuses_mistakes_by_name(value, message):
    with pytest.raises(ValueError, match=message):
        load_config("smoke", [f"data.corpora={value}"])


def test_docs_example_loads(tmp_path):
    """docs/training.md's "Several corpora" YAML is a preset that load_config accepts as written."""
    section = DOCS.read_text(encoding="utf-8").split("## Several corpora", 1)[1].split("\n## ", 1)[0]
    example = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    preset = tmp_path / "mixed.yaml"
    preset.write_text(example, encoding="utf-8")
    config = load_config(str(preset))
    assert len(config.data.corpora) >= 1 and config.train.tag_synthetic
    assert any(extra.synthetic for extra in config.data.corpora)


# === One corpus: unchanged ===


def test_single_corpus_config_prepares_and_batches_as_before(tmp_path):
    config = load_config("smoke", tiny_overrides())
    data = prepare_data(config, tmp_path, log=lambda *_: None)
    assert data.extras == () and data.synthetic_tag_id is None
    assert data.vocab_dir.name == "vocab-unigram-400-400"  # same folder, so the same cached models
    assert "source_control_symbols" not in tokenizer_settings(config)  # same fingerprint
    # the train set is the single-corpus pipeline itself (not a mixture), with the same seed
    expected = make_dataset(
        data.corpus.train_files,
        *data.tokenizers,
        batch_size=config.train.batch_size,
        max_source_tokens=config.train.max_source_tokens,
        max_target_tokens=config.train.max_target_tokens,
        bucket_width=config.train.bucket_width,
        shuffle_buffer=config.train.shuffle_buffer,
        seed=config.train.seed,
    )
    train_set = make_train_set(config, data)  # the op seed is train.seed: the same shuffle
    got = [x[0][0].numpy() for x in train_set.take(3)]
    want = [x[0][0].numpy() for x in expected.take(3)]
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert epoch_steps(config, data, train_set) == count_batches(expected)
    assert [row["corpus"] for row in corpora_report(config, data)] == [config.corpus_name]


# === Extra corpora: prepared, leak-free, reported ===


def test_extra_corpus_is_cleaned_and_keeps_no_held_out_sentence(tagged, extra_tsv):
    config, data, _ = tagged
    (extra,) = data.extras
    held_out = {
        side
        for split in (data.corpus.dev, data.corpus.test)
        for line in split.read_text().splitlines()
        for side in line.split("\t")
    }
    raw = [line.split("\t") for line in extra_tsv.read_text().splitlines() if line.count("\t") == 1]
    leaking = sum(1 for source, target in raw if source and (source in held_out or target in held_out))
    assert leaking > 0  # the fixture does overlap, so the check below means something
    kept = [line.split("\t") for line in extra.train_files[0].read_text().splitlines()]
    assert not any(source in held_out or target in held_out for source, target in kept)
    report = extra.report
    assert report["held_out_overlap"] == leaking
    assert report["bad"]["no_tab"]["count"] == 1 and report["bad"]["empty_side"]["count"] == 1
    assert report["bad"]["no_tab"]["locations"] == [301]
    assert report["duplicates"] >= 1  # line 5 twice at least
    assert report["pairs"] == len(kept) == len(set(map(tuple, kept)))
    assert report["read"] == 303


def test_extra_corpus_is_reused_when_unchanged(tagged, tmp_path_factory):
    config, data, _ = tagged
    lines: list[str] = []
    again = prepare_data(config, data.corpus.directory.parent, log=lines.append)
    assert again.extras[0].directory == data.extras[0].directory
    assert any(line.startswith("Reusing the extra corpus 1") for line in lines)


def test_report_and_model_card_list_each_corpus_with_pairs_and_weight(tagged):
    from app.train import model_card

    config, data, lines = tagged
    main_pairs, extra_pairs = data.corpus.report["splits"]["train"], data.extras[0].report["pairs"]
    logged = "\n".join(lines)
    assert f"{config.corpus_name}: {main_pairs:,} pairs, weight 1 (66.7% of the draws)" in logged
    assert f"corpus 1: tsv-synthetic: {extra_pairs:,} pairs, weight 0.5 (33.3% of the draws)" in logged
    filtered = filter_report(data, config.train.max_source_tokens, config.train.max_target_tokens)
    assert "corpus 1: tsv-synthetic" in filtered
    card = model_card(config, data, filtered, {"status": "trained"})
    rows = card["data"]["corpora"]
    assert [(row["pairs"], row["weight"], row["synthetic"]) for row in rows] == [
        (main_pairs, 1.0, False),
        (extra_pairs, 0.5, True),
    ]
    assert rows[1]["kept_by_length_filter"] == filtered["corpus 1: tsv-synthetic"].kept


# === Mixing ===


def test_mixing_respects_the_weights_within_sampling_error():
    """10,000 draws from three corpora of 3, 50 and 1,000 elements (tagged by index: the small ones
    are revisited): each count within 4 binomial standard deviations of its expected share."""
    sizes, weights, draws = (3, 50, 1000), (2.0, 1.0, 1.0), 10_000
    sets = [tf.data.Dataset.from_tensors(tf.constant(index)).repeat(size) for index, size in enumerate(sizes)]
    drawn = next(iter(mix(sets, weights, seed=7).batch(draws))).numpy()
    counts = np.bincount(drawn, minlength=len(sizes))
    for count, weight in zip(counts, weights, strict=True):
        share = weight / sum(weights)
        assert abs(count - draws * share) <= 4 * math.sqrt(draws * share * (1 - share)), (counts, weights)
    assert counts[0] > sizes[0]  # the 3-element corpus is repeated, not exhausted
    again = next(iter(mix(sets, weights, seed=7).batch(draws))).numpy()
    assert np.array_equal(drawn, again)  # seeded: train.seed decides the draws


def test_mixing_refuses_a_weight_per_missing_dataset():
    with pytest.raises(ValueError, match="one weight per dataset"):
        mix([tf.data.Dataset.range(3)], [1.0, 2.0], seed=1)


def test_epoch_is_one_pass_over_the_main_corpus(tagged):
    """The mixed set is endless: an epoch is the main corpus's batch count (not the mixture's)."""
    config, data, _ = tagged
    main_only = make_dataset(
        data.corpus.train_files,
        *data.tokenizers,
        batch_size=config.train.batch_size,
        max_source_tokens=config.train.max_source_tokens,
        max_target_tokens=config.train.max_target_tokens,
        bucket_width=config.train.bucket_width,
    )
    assert epoch_steps(config, data, make_train_set(config, data)) == count_batches(main_only)


# === The synthetic tag ===


def test_tag_is_a_control_piece_of_the_source_model_only(tagged):
    _, data, _ = tagged
    assert data.vocab_dir.name.endswith("-tagged")
    source = sentencepiece.SentencePieceProcessor(model_file=str(data.vocab_dir / "source.model"))
    target = sentencepiece.SentencePieceProcessor(model_file=str(data.vocab_dir / "target.model"))
    assert source.piece_to_id(SYNTHETIC_TAG) == data.synthetic_tag_id
    assert source.is_control(data.synthetic_tag_id)
    assert target.piece_to_id(SYNTHETIC_TAG) == target.unk_id()


def test_synthetic_sources_start_with_the_tag_and_real_ones_do_not(tagged):
    config, data, _ = tagged
    tag = data.synthetic_tag_id
    main, extra = data.mixture(config.data.weight)
    assert extra.tag_id == tag and main.tag_id is None
    limits = {"max_source_tokens": config.train.max_source_tokens, "max_target_tokens": 64}
    synthetic = [s for s, _ in mixed_pairs([extra], *data.tokenizers, **limits).take(50).as_numpy_iterator()]
    real = [s for s, _ in mixed_pairs([main], *data.tokenizers, **limits).take(50).as_numpy_iterator()]
    assert all(ids[0] == tag and tag not in ids[1:] for ids in synthetic)
    assert not any(tag in ids for ids in real)
    assert all(len(ids) <= config.train.max_source_tokens for ids in synthetic)  # the tag counts
    # mixed batches: tagged rows come from the synthetic corpus alone, in about its share
    (sources, _), _ = next(iter(make_train_set(config, data).take(1)))
    assert 0 < (sources.numpy()[:, 0] == tag).sum() < sources.shape[0]


def test_dev_and_export_tokenization_never_add_the_tag(tagged):
    from app.models.seq2seq import build_model
    from app.translator import build_translator

    config, data, _ = tagged
    tag = data.synthetic_tag_id
    for (sources, _), _ in make_dev_set(config, data):
        assert not (sources.numpy() == tag).any()
    model = build_model(
        data.source_tokenizer.vocab_size,
        data.target_tokenizer.vocab_size,
        embedding_dim=8,
        units=8,
        attention_units=8,
        readout_units=8,
    )
    translator = build_translator(model, config, data.vocab_dir, data.tokenizers)
    ids = translator.source_ids(tf.constant([f"{SYNTHETIC_TAG} Dios es amor.", "Jesús lloró."])).numpy()
    assert not (ids == tag).any()  # not even from the tag's own text: a control piece


def test_untagged_synthetic_corpus_has_no_tag(tmp_path, extra_tsv):
    config = load_config("smoke", _extra_overrides(extra_tsv))  # train.tag_synthetic off
    data = prepare_data(config, tmp_path, log=lambda *_: None)
    assert data.synthetic_tag_id is None and not data.vocab_dir.name.endswith("-tagged")
    assert all(corpus.tag_id is None for corpus in data.mixture(1.0))
    assert isinstance(data.mixture(1.0)[1], MixedCorpus)
