"""The `dates` task: generated English, Spanish and numeric dates → ISO 8601, through preparation,
training and exact-match scoring.

The sources are read back here by a parser of their own (its own month and weekday names), so a
wrong name, weekday or numeric order in `app/data/dates.py` fails these tests."""

from __future__ import annotations

import datetime
import re
from collections import defaultdict
from pathlib import Path

import pytest

from app.config import load_config
from app.data.dates import FORMATS, date_pairs
from app.data.prepare import prepare_data
from app.data.tokenizer import read_side
from app.evaluate import evaluate_run
from app.scoring import corpus_scores, exact_match
from app.train import train

SAMPLE = 5000
ENGLISH = "january february march april may june july august september october november december"
SPANISH = "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre"
# every way a source may name a month (lower case) → its number
MONTHS = {
    name: number
    for names in (ENGLISH.split(), SPANISH.split())
    for number, name in enumerate(names, start=1)
    for name in (name, name[:3])
} | {"sept": 9}
WEEKDAYS = {  # datetime.date.weekday(): Monday is 0
    name: number
    for names in (
        ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
        ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"],
    )
    for number, name in enumerate(names)
    for name in (name, name[:3])
}
SMALL = ["data.dates_pairs=3000", "data.dev_size=100", "data.test_size=200"]


def full_year(digits: str) -> int:
    """The documented two-digit rule: 50-99 are 19yy, 00-49 are 20yy."""
    year = int(digits)
    if len(digits) == 4:
        return year
    return 1900 + year if year >= 50 else 2000 + year


def read_date(source: str) -> tuple[datetime.date, int | None]:
    """The date a source denotes and the weekday it names (None if it names none)."""
    text = source.lower()
    numbers = re.findall(r"\d+", text)
    words = re.findall(r"[a-záéíóúñ]+", text)
    if not words:
        return read_numeric(text, numbers), None
    positions = [index for index, word in enumerate(words) if word in MONTHS]
    month = MONTHS[words[positions[-1]]]  # a weekday ("mar" = martes) comes before the month
    named = [WEEKDAYS[word] for word in words[: positions[-1]] if word in WEEKDAYS]
    assert len(named) <= 1, source
    date = datetime.date(full_year(numbers[-1]), month, int(numbers[0]))
    return date, (named[0] if named else None)


def read_numeric(text: str, numbers: list[str]) -> datetime.date:
    if len(numbers) == 1:  # 20210303
        year, month, day = numbers[0][:4], numbers[0][4:6], numbers[0][6:]
    elif len(numbers[0]) == 4:  # a four-digit year first: year, month, day
        year, month, day = numbers
    elif "/" in text:  # year last, slashes: month/day/year (US)
        month, day, year = numbers
    else:  # year last, dashes or dots: day, month, year
        day, month, year = numbers
    return datetime.date(full_year(year), int(month), int(day))


@pytest.fixture(scope="module")
def sample() -> list[tuple[str, str, str]]:
    return list(date_pairs(seed=5, count=SAMPLE))


def test_the_same_seed_gives_the_same_pairs_and_another_seed_others(sample):
    assert list(date_pairs(seed=5, count=SAMPLE)) == sample
    other = list(date_pairs(seed=6, count=SAMPLE))
    assert sum(a[1:] == b[1:] for a, b in zip(sample, other, strict=True)) < SAMPLE // 100
    assert [reference for reference, _, _ in sample[:3]] == ["dates:1", "dates:2", "dates:3"]
    assert list(date_pairs(seed=5, count=10)) == sample[:10]  # a count is a prefix, not another draw


def test_every_source_denotes_its_target_with_the_right_weekday(sample):
    weekdays = 0
    for _, source, target in sample:
        date = datetime.date.fromisoformat(target)
        assert target == f"{date.year:04d}-{date.month:02d}-{date.day:02d}"
        assert datetime.date(1950, 1, 1) <= date <= datetime.date(2049, 12, 31)
        found, weekday = read_date(source)
        assert found == date, (source, target)
        assert weekday in (None, date.weekday()), (source, target)
        weekdays += weekday is not None
    assert weekdays > SAMPLE // 10  # the weekday check ran on many sources


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("3/3/21", "2021-03-03"),
        ("03/04/1999", "1999-03-04"),  # slashes: US month/day/year
        ("03-04-1999", "1999-04-03"),  # dashes: day-month-year
        ("04.03.1950", "1950-03-04"),  # dots, year last: day.month.year
        ("04-03-50", "1950-03-04"),  # 50-99 are 19yy
        ("04-03-49", "2049-03-04"),  # 00-49 are 20yy
        ("2021.03.03", "2021-03-03"),
        ("Wednesday, March 3rd 2021", "2021-03-03"),
        ("miércoles, 3 de marzo de 2021", "2021-03-03"),
        ("marzo 3, 21", "2021-03-03"),
        ("mar 2 mar 2021", "2021-03-02"),  # martes, 2 de marzo
    ],
)
def test_the_test_parser_reads_hand_written_dates(source, target):
    """The parser the other tests rely on, on dates written by hand (not by the generator)."""
    date, weekday = read_date(source)
    assert date.isoformat() == target and weekday in (None, date.weekday())


def test_no_source_means_two_dates(sample):
    targets = defaultdict(set)
    for _, source, target in [*sample, *date_pairs(seed=7, count=20_000)]:
        targets[source].add(target)
    assert all(len(found) == 1 for found in targets.values())


def test_many_formats_in_both_languages_and_cases(sample):
    sources = [source for _, source, _ in sample]
    shapes = {re.sub(r"\d", "9", source.lower()) for source in sources}
    assert len(shapes) > 300  # formats × month and weekday names × numbers' widths
    languages = {"english": ENGLISH.split(), "spanish": SPANISH.split()}
    for names in languages.values():
        assert sum(any(name in source.lower() for name in names) for source in sources) > SAMPLE // 5
    assert sum(not re.search(r"[^\d\W]", source) for source in sources) > SAMPLE // 5  # numeric only
    assert any(source.isupper() for source in sources) and any(source.islower() for source in sources)
    assert any(source[0].isupper() and not source.isupper() for source in sources)
    assert len({form.template for form in FORMATS}) == len(FORMATS) > 30


def test_the_format_counts_are_those_the_docs_give():
    """The docs say 44 formats (17 English, 14 Spanish, 13 numeric); a format added or removed also
    changes the generated pairs (GENERATOR_VERSION), so the docs and the version move with it."""
    languages = [form.language for form in FORMATS]
    counts = {language: languages.count(language) for language in ("en", "es", "numeric")}
    assert counts == {"en": 17, "es": 14, "numeric": 13} and len(FORMATS) == 44


def test_exact_match_strips_whitespace_and_takes_any_reference():
    hypotheses = ["2021-03-03", " 1999-12-31 ", "2000-01-01", "1950-05-06"]
    references = [["2021-03-03"], ["1999-12-31"], ["2000-01-02"], ["1950-06-05", "1950-05-06"]]
    assert exact_match(hypotheses, references) == 75.0
    assert exact_match([], []) == 0.0
    assert corpus_scores(hypotheses[:1], references[:1])["exact_match"] == 100.0
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference"):
        exact_match(hypotheses[:2], references[:1])


def iso_dates(paths: tuple[Path, ...] | Path) -> set[str]:
    return set(read_side(paths, 1))


def test_prepared_splits_share_no_date(tmp_path):
    config = load_config("dates", SMALL)
    data = prepare_data(config, tmp_path, log=lambda *_: None)
    assert data.corpus.directory == tmp_path / "dates-3000-dev100-test200"
    train_dates = iso_dates(data.corpus.train_files)
    dev_dates, test_dates = iso_dates(data.corpus.dev), iso_dates(data.corpus.test)
    assert len(list(read_side(data.corpus.test, 1))) == 200 and len(test_dates) > 100
    assert not test_dates & train_dates and not dev_dates & train_dates and not dev_dates & test_dates
    report = data.corpus.report
    assert report["read"] == 3000 and sum(report["splits"].values()) == 3000 - report["duplicates"]


@pytest.mark.slow
def test_a_small_model_learns_unseen_dates(tmp_path):
    """A CI-sized run (2,700 train pairs, 6 epochs: about a minute on 2 cores) scored on test dates
    that no training pair has. It measured 87.5 and 92.5 % exact match (train.seed 1234 and 99; the full
    preset reaches 99-100 %); the bar of 70 % leaves room for thread-order noise and fails when learning
    or scoring breaks (an untrained model scores 0, one that copies the source about 3 %)."""
    fast = ["train.epochs=6", "train.warmup_steps=20", "train.learning_rate=0.01"]
    config = load_config("dates", [*SMALL, *fast])
    train(config, tmp_path / "run", tmp_path / "data", log=lambda *_: None)
    metrics = evaluate_run(tmp_path / "run", "test", data_dir=tmp_path / "data", log=lambda *_: None)
    assert metrics["exact_match"] >= 70.0, metrics["exact_match"]
