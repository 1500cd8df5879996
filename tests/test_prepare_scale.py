"""Preparation at scale: streamed, hash-decided splits over a generated corpus, train shards read by
tf.data, the tokenizers' bounded seeded sample, and two processes preparing the same corpus at once."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import Config, DataConfig, load_config
from app.data import corpus
from app.data.corpus import prepare_corpus, read_tsv_records
from app.data.lock import exclusive_lock
from app.data.splits import shard_sizes
from app.data.synthetic import seed_pairs, write_recombined_tsv
from app.data.tokenizer import sample_lines
from tests.conftest import BIBLE_SAMPLE

GENERATED_PAIRS = 20_000
SHARD_PAIRS = 4_000


def generate(path: Path, count: int, seed: int = 3) -> Path:
    pairs = seed_pairs((record.source, record.target) for record in read_tsv_records(BIBLE_SAMPLE))
    return write_recombined_tsv(pairs, path, count, seed=seed)


def scale_config(tsv: Path, **data_fields) -> Config:
    fields = {"corpus": "tsv", "tsv_path": str(tsv), "dev_size": 500, "test_size": 500, **data_fields}
    return Config(data=DataConfig(**fields))


def read_lines(paths) -> list[str]:
    return [line for path in paths for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("generated") / "recombined.tsv", GENERATED_PAIRS)


@pytest.fixture(scope="module")
def sharded(generated, tmp_path_factory) -> corpus.PreparedCorpus:
    config = scale_config(generated, shard_pairs=SHARD_PAIRS)
    return prepare_corpus(config, tmp_path_factory.mktemp("sharded"), log=lambda *_: None)


def test_the_generator_recombines_real_pairs_reproducibly(generated, tmp_path):
    lines = generated.read_text(encoding="utf-8").splitlines()
    assert len(lines) == GENERATED_PAIRS and all(line.count("\t") == 1 for line in lines)
    seeds = set(BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines())
    assert 0 < sum(line in seeds for line in lines) < GENERATED_PAIRS  # single pairs and joined ones
    assert generate(tmp_path / "again.tsv", GENERATED_PAIRS).read_bytes() == generated.read_bytes()
    assert generate(tmp_path / "other.tsv", 100, seed=4).read_text().splitlines() != lines[:100]


def test_a_large_train_split_is_written_as_balanced_shards(sharded):
    train = sharded.report["splits"]["train"]
    count = -(-train // SHARD_PAIRS)
    assert count >= 3
    assert [path.name for path in sharded.train_files] == [
        f"train-{index:05d}-of-{count:05d}.tsv" for index in range(count)
    ]
    sizes = [len(read_lines([path])) for path in sharded.train_files]
    assert sizes == sharded.report["train_file_pairs"] == shard_sizes(train, SHARD_PAIRS)
    assert sum(sizes) == train and max(sizes) <= SHARD_PAIRS and max(sizes) - min(sizes) <= 1
    assert not (sharded.directory / "train.tsv").exists()
    with pytest.raises(ValueError, match="sharded into .* files; read PreparedCorpus.train_files"):
        _ = sharded.train


def test_sharded_splits_are_leak_free_and_without_duplicates(sharded, generated):
    train = read_lines(sharded.train_files)
    held_out = read_lines([sharded.dev, sharded.test])
    assert sharded.report["splits"] == {"train": len(train), "dev": 500, "test": 500}
    train_sides = [line.split("\t") for line in train]
    held_sides = [line.split("\t") for line in held_out]
    assert {source for source, _ in train_sides}.isdisjoint(source for source, _ in held_sides)
    assert {target for _, target in train_sides}.isdisjoint(target for _, target in held_sides)
    distinct = set(generated.read_text(encoding="utf-8").splitlines())
    assert len(train) + len(held_out) == len(set(train + held_out)) == sharded.report["kept"]
    assert sharded.report["unique"] == len(distinct)
    assert sharded.report["duplicates"] == GENERATED_PAIRS - len(distinct) > 0
    assert set(train + held_out) == distinct  # every distinct pair is in exactly one split


def test_shards_are_the_unsharded_train_split_cut_in_order_and_reproducible(sharded, generated, tmp_path):
    again = prepare_corpus(scale_config(generated, shard_pairs=SHARD_PAIRS), tmp_path / "again", log=print)
    for first, second in zip(sharded.train_files, again.train_files, strict=True):
        assert first.read_bytes() == second.read_bytes()
    assert again.dev.read_bytes() == sharded.dev.read_bytes()
    whole = prepare_corpus(scale_config(generated), tmp_path / "whole", log=print)
    assert whole.train_files == (whole.directory / "train.tsv",) and whole.train == whole.train_files[0]
    assert whole.train.read_bytes() == b"".join(path.read_bytes() for path in sharded.train_files)
    assert whole.test.read_bytes() == sharded.test.read_bytes()


def test_the_cache_covers_every_shard_and_stale_shards_go(generated, tmp_path):
    config = scale_config(generated, shard_pairs=SHARD_PAIRS)
    first = prepare_corpus(config, tmp_path, log=print)
    messages = []
    prepare_corpus(config, tmp_path, log=messages.append)
    assert messages[0].startswith("Reusing the prepared corpus")
    first.train_files[-1].write_text("edited\tby hand\n", encoding="utf-8")
    messages.clear()
    rebuilt = prepare_corpus(config, tmp_path, log=messages.append)
    assert not any(message.startswith("Reusing") for message in messages)
    assert rebuilt.train_files[-1].read_bytes() != b"edited\tby hand\n"
    unsharded = prepare_corpus(scale_config(generated), tmp_path, log=print)
    assert sorted(path.name for path in unsharded.directory.glob("*.tsv")) == [
        "dev.tsv",
        "test.tsv",
        "train.tsv",
    ]


def test_max_pairs_takes_a_seeded_subset_of_a_streamed_corpus(generated, tmp_path):
    config = scale_config(generated, max_pairs=3000, shard_pairs=1000)
    prepared = prepare_corpus(config, tmp_path / "one", log=print)
    assert prepared.report["kept"] == 3000 and prepared.report["splits"]["train"] == 2400  # 10% each held out
    assert len(prepared.train_files) == 3
    again = prepare_corpus(config, tmp_path / "two", log=print)
    assert read_lines(again.train_files) == read_lines(prepared.train_files)
    reseeded = prepare_corpus(scale_config(generated, max_pairs=3000, seed=9), tmp_path / "three", log=print)
    assert set(read_lines(reseeded.train_files)) != set(read_lines(prepared.train_files))


# === Tokenizers: a bounded, seeded sample of every shard ===


def test_the_tokenizer_sample_is_seeded_bounded_and_drawn_from_every_shard(sharded):
    lines = read_lines(sharded.train_files)
    sample = sample_lines(sharded.train_files, 1000, seed=1)
    assert len(sample) == 1000 and len(set(sample)) == 1000 and set(sample) <= set(lines)
    assert sample == sample_lines(sharded.train_files, 1000, seed=1)
    assert sample != sample_lines(sharded.train_files, 1000, seed=2)
    shard_of = {line: index for index, path in enumerate(sharded.train_files) for line in read_lines([path])}
    per_shard = collections.Counter(shard_of[line] for line in sample)
    assert len(per_shard) == len(sharded.train_files)
    assert min(per_shard.values()) > 1000 / len(sharded.train_files) / 2  # about even: no shard skipped
    assert sample_lines(sharded.train_files, len(lines) + 5, seed=1) == lines  # all of it, in order


def test_tokenizers_fit_on_the_sample_of_a_sharded_split_and_are_reused(sharded, tmp_path):
    from app.data.tokenizer import fit_tokenizers

    settings = {
        "source_vocab_size": 400,
        "target_vocab_size": 400,
        "model_type": "unigram",
        "character_coverage": 1.0,
        "max_training_sentences": 2000,
    }
    messages: list[str] = []
    paths = fit_tokenizers(sharded.train_files, tmp_path / "vocab", settings, log=messages.append, seed=5)
    assert messages[0].startswith("Sampled 2,000 pairs for the tokenizers")
    fit_tokenizers(sharded.train_files, tmp_path / "vocab", settings, log=messages.append, seed=5)
    assert messages[-1].startswith("Reusing tokenizers") and paths["source"].is_file()
    fit_tokenizers(sharded.train_files, tmp_path / "vocab", settings, log=messages.append, seed=6)
    assert not messages[-1].startswith("Reusing")  # another sample, other models


def test_the_length_filter_counts_every_shard(sharded, generated, tmp_path):
    from app.data.prepare import count_length_filter
    from app.data.tokenizer import fit_tokenizers

    settings = {
        "source_vocab_size": 400,
        "target_vocab_size": 400,
        "model_type": "unigram",
        "character_coverage": 1.0,
        "max_training_sentences": 500,
    }
    fit_tokenizers(sharded.train_files, tmp_path / "vocab", settings, log=print)
    whole = prepare_corpus(scale_config(generated), tmp_path / "whole", log=print)
    counts = count_length_filter("train", sharded.train_files, tmp_path / "vocab", 60, 60)
    assert counts == count_length_filter("train", whole.train, tmp_path / "vocab", 60, 60)
    assert counts.pairs == sharded.report["splits"]["train"] and 0 < counts.kept < counts.pairs


# === tf.data over shards ===


def test_make_dataset_reads_every_shard_and_yields_each_pair_once_per_epoch(tmp_path):
    from app.data.pipeline import make_dataset
    from app.data.tokenizer import SubwordTokenizer, read_side, train_sentencepiece

    config = scale_config(generate(tmp_path / "small.tsv", 3000), dev_size=50, test_size=50, shard_pairs=700)
    sharded = prepare_corpus(config, tmp_path / "data", log=print)
    assert len(sharded.train_files) == 4
    tokenizers = [
        SubwordTokenizer(train_sentencepiece(read_side(BIBLE_SAMPLE, side), 400)) for side in (0, 1)
    ]
    dataset = make_dataset(
        sharded.train_files,
        *tokenizers,
        batch_size=256,
        max_source_tokens=4096,
        max_target_tokens=4096,
        bucket_width=64,
        shuffle_buffer=1000,
        seed=1,
    )
    expected = collections.Counter(tuple(line.split("\t")) for line in read_lines(sharded.train_files))
    assert max(expected.values()) == 1
    for _ in range(2):  # the cached, reshuffled second epoch too
        seen: collections.Counter = collections.Counter()
        for (source, _), target_out in dataset:
            sources = tokenizers[0].detokenize(source).numpy()  # markers and padding are ignored
            targets = tokenizers[1].detokenize(target_out).numpy()
            seen.update((s.decode(), t.decode()) for s, t in zip(sources, targets, strict=True))
        assert seen == expected


def test_make_dataset_refuses_no_files():
    from app.data.pipeline import read_pairs

    with pytest.raises(ValueError, match="at least one prepared TSV file"):
        read_pairs([])


# === Two processes at once ===

PREPARE_IN_A_CHILD = """
import json, sys
from pathlib import Path
from app.config import load_config
from app.data.prepare import prepare_data
config = load_config("smoke", json.loads(sys.argv[1]))
data = prepare_data(config, Path(sys.argv[2]), log=lambda message: print(message, flush=True))
models = {side: (data.vocab_dir / f"{side}.model").read_bytes().hex()[:64] for side in ("source", "target")}
print(json.dumps({"report": data.corpus.report, "models": models}))
"""


def test_two_processes_preparing_the_same_corpus_prepare_it_once(tmp_path):
    tsv = generate(tmp_path / "recombined.tsv", 3000)
    overrides = [
        f"data.tsv_path={tsv}",
        "data.corpus=tsv",
        "data.dev_size=100",
        "data.test_size=100",
        "tokenizer.source_vocab_size=400",
        "tokenizer.target_vocab_size=400",
    ]
    data_dir = tmp_path / "data"
    logs = [tmp_path / f"child-{index}.log" for index in range(2)]
    # The test holds the corpus lock until both children wait on it, so that they really compete.
    corpus_name = load_config("smoke", overrides).corpus_name  # tsv-recombined-pairs3000-dev100-test100
    with exclusive_lock(data_dir / f".{corpus_name}.lock", "the test"):
        children = [
            subprocess.Popen(
                [sys.executable, "-c", PREPARE_IN_A_CHILD, json.dumps(overrides), str(data_dir)],
                stdout=open(log, "w"),  # noqa: SIM115 (closed with the process)
                stderr=subprocess.STDOUT,
            )
            for log in logs
        ]
        deadline = time.monotonic() + 120
        while not all("Waiting for another process" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            assert all(child.poll() is None for child in children), [log.read_text()[-2000:] for log in logs]
            time.sleep(0.2)
    for child in children:
        assert child.wait(timeout=120) == 0
    texts = [log.read_text() for log in logs]
    assert sum("Wrote " in text for text in texts) == 1
    assert sum("Reusing the prepared corpus" in text for text in texts) == 1
    assert sum("Training the source SentencePiece model" in text for text in texts) == 1
    assert sum("Reusing tokenizers" in text for text in texts) == 1
    results = [json.loads(text.strip().splitlines()[-1]) for text in texts]
    assert results[0] == results[1]
