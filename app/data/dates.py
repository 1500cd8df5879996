"""A second seq2seq task, offline and exactly scorable: dates as people write them → ISO 8601.

`date_pairs(seed, count)` draws dates from 1950-01-01 to 2049-12-31 and writes each in one of many
English, Spanish and numeric formats ("3rd of March 2021", "miércoles, 3 de marzo de 2021",
"3/3/21", …), some in lower, upper or title case, paired with `YYYY-MM-DD`. Month and weekday
names are spelled here, never taken from the locale, so a seed gives the same pairs everywhere.

Every source denotes one date, so no two pairs disagree. The numeric formats follow one rule:
  - a four-digit year first is year-month-day (`2021.03.03`, `2021/03/03`, `20210303`);
  - with the year last, slashes are month/day/year (US: `03/03/2021`, `3/3/21`) and dashes or dots
    day-month-year (`03-03-2021`, `03.03.2021`);
  - a two-digit year `yy` is 19yy from 50 to 99 and 20yy from 00 to 49 (the range's century split).
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Iterator
from typing import NamedTuple

FIRST_DAY = datetime.date(1950, 1, 1)
LAST_DAY = datetime.date(2049, 12, 31)
GENERATOR_VERSION = 1  # bump when a format, name or draw changes, so prepared corpora are rebuilt

# Names as the formats write them; index = month - 1 or date.weekday() (Monday is 0).
ENGLISH_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August")
ENGLISH_MONTHS += ("September", "October", "November", "December")
ENGLISH_MONTH_ABBREVIATIONS = tuple(month[:3] for month in ENGLISH_MONTHS)
ENGLISH_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ENGLISH_WEEKDAY_ABBREVIATIONS = tuple(weekday[:3] for weekday in ENGLISH_WEEKDAYS)
SPANISH_MONTHS = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto")
SPANISH_MONTHS += ("septiembre", "octubre", "noviembre", "diciembre")
SPANISH_MONTH_ABBREVIATIONS = tuple(
    "sept" if month == "septiembre" else month[:3] for month in SPANISH_MONTHS
)
SPANISH_WEEKDAYS = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo")
SPANISH_WEEKDAY_ABBREVIATIONS = ("lun", "mar", "mié", "jue", "vie", "sáb", "dom")


class DateFormat(NamedTuple):
    """One way of writing a date: a `str.format` template over the fields of `date_fields`."""

    language: str  # en | es | numeric (no words, so no case variants)
    template: str


FORMATS = (
    DateFormat("en", "{ordinal} of {month} {year}"),
    DateFormat("en", "the {ordinal} of {month}, {year}"),
    DateFormat("en", "{month} {day}, {year}"),
    DateFormat("en", "{month} {ordinal}, {year}"),
    DateFormat("en", "{month} {ordinal} {year}"),
    DateFormat("en", "{weekday}, {month} {ordinal} {year}"),
    DateFormat("en", "{weekday}, {month} {day}, {year}"),
    DateFormat("en", "{weekday} {day} {month} {year}"),
    DateFormat("en", "{weekday}, the {ordinal} of {month} {year}"),
    DateFormat("en", "{day} {month} {year}"),
    DateFormat("en", "{day} {mon} {year}"),
    DateFormat("en", "{day_2} {mon} {year}"),
    DateFormat("en", "{mon} {day}, {year}"),
    DateFormat("en", "{mon} {day} '{year_2}"),
    DateFormat("en", "{day}-{mon}-{year}"),
    DateFormat("en", "{wkd}, {day} {mon} {year}"),
    DateFormat("en", "{wkd} {mon} {day_2} {year}"),
    DateFormat("es", "{day} de {mes} de {year}"),
    DateFormat("es", "el {day} de {mes} de {year}"),
    DateFormat("es", "{dia}, {day} de {mes} de {year}"),
    DateFormat("es", "{dia} {day} de {mes} del {year}"),
    DateFormat("es", "el {dia} {day} de {mes} de {year}"),
    DateFormat("es", "{mes} {day}, {year_2}"),
    DateFormat("es", "{mes} {day}, {year}"),
    DateFormat("es", "{mes} {day} de {year}"),
    DateFormat("es", "{day} {mes} {year}"),
    DateFormat("es", "{day_2} {mes} {year}"),
    DateFormat("es", "{day} {mes_abr} {year}"),
    DateFormat("es", "{day} {mes_abr}. {year}"),
    DateFormat("es", "{day}-{mes_abr}-{year}"),
    DateFormat("es", "{dia_abr} {day} {mes_abr} {year}"),
    DateFormat("numeric", "{month_2}/{day_2}/{year}"),
    DateFormat("numeric", "{month_number}/{day}/{year}"),
    DateFormat("numeric", "{month_number}/{day}/{year_2}"),
    DateFormat("numeric", "{day_2}-{month_2}-{year}"),
    DateFormat("numeric", "{day}-{month_number}-{year}"),
    DateFormat("numeric", "{day_2}-{month_2}-{year_2}"),
    DateFormat("numeric", "{day_2}.{month_2}.{year}"),
    DateFormat("numeric", "{day}.{month_number}.{year}"),
    DateFormat("numeric", "{year}.{month_2}.{day_2}"),
    DateFormat("numeric", "{year}/{month_2}/{day_2}"),
    DateFormat("numeric", "{year}-{month_2}-{day_2}"),
    DateFormat("numeric", "{year}-{month_number}-{day}"),
    DateFormat("numeric", "{year}{month_2}{day_2}"),
)
# How the words of a date are cased, with their weights: mostly as written, else lower, upper or title.
CASINGS = ("as written", "lower", "upper", "title")
CASING_WEIGHTS = (5, 2, 1, 1)


def date_pairs(seed: int, count: int) -> Iterator[tuple[str, str, str]]:
    """Yields `count` pairs `(reference, source, target)`: `("dates:1", "3rd of March 2021", "2021-03-03")`.

    The dates, formats and casings are drawn from `random.Random(seed)`; the same seed gives the same
    pairs on every machine. Pairs may repeat (preparation removes exact duplicates).
    """
    if count < 0:
        raise ValueError(f"count must be at least 0 (pairs to generate), not {count}")
    generator = random.Random(seed)
    days = (LAST_DAY - FIRST_DAY).days + 1
    for index in range(1, count + 1):
        date = FIRST_DAY + datetime.timedelta(days=generator.randrange(days))
        form = generator.choice(FORMATS)
        casing = generator.choices(CASINGS, CASING_WEIGHTS)[0]
        yield f"dates:{index}", write_date(date, form, casing), date.isoformat()


def write_date(date: datetime.date, form: DateFormat, casing: str = "as written") -> str:
    """`date` in the format `form`, its words cased by `casing` (one of CASINGS)."""
    if casing not in CASINGS:
        raise ValueError(f"casing {casing!r} is not one of {list(CASINGS)}")
    text = form.template.format(**date_fields(date))
    if form.language == "numeric" or casing == "as written":
        return text
    if casing == "title":  # word by word: str.title() would write "3Rd"
        return " ".join(word[:1].upper() + word[1:] for word in text.split(" "))
    return text.lower() if casing == "lower" else text.upper()


def date_fields(date: datetime.date) -> dict[str, str]:
    """The pieces a template may use: numbers with and without zeros, names in both languages."""
    month, weekday = date.month - 1, date.weekday()
    return {
        "day": str(date.day),
        "day_2": f"{date.day:02d}",
        "ordinal": english_ordinal(date.day),
        "month_number": str(date.month),
        "month_2": f"{date.month:02d}",
        "year": f"{date.year:04d}",
        "year_2": f"{date.year % 100:02d}",
        "month": ENGLISH_MONTHS[month],
        "mon": ENGLISH_MONTH_ABBREVIATIONS[month],
        "weekday": ENGLISH_WEEKDAYS[weekday],
        "wkd": ENGLISH_WEEKDAY_ABBREVIATIONS[weekday],
        "mes": SPANISH_MONTHS[month],
        "mes_abr": SPANISH_MONTH_ABBREVIATIONS[month],
        "dia": SPANISH_WEEKDAYS[weekday],
        "dia_abr": SPANISH_WEEKDAY_ABBREVIATIONS[weekday],
    }


def english_ordinal(day: int) -> str:
    """1st, 2nd, 3rd, 4th, …, 11th, 12th, 13th, …, 21st, 22nd, 23rd, …, 31st."""
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"
