"""The documentation stays true where that is cheap to check: its links resolve, the commands it shows
parse, the README's command table is `attend --help`'s, and the facts most likely to drift from the
code (presets, their data folders and epochs, the dates task's formats) match it. The README's
commands and code blocks run in tests/test_readme.py and tests/test_readme_code.py."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from app.cli import build_parser
from app.config import available_presets, load_config
from app.data.dates import FORMATS

ROOT = Path(__file__).parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "models" / "README.md",
    ROOT / "data" / "README.md",
]
FENCE = re.compile(r"^```[^\n]*\n.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside code blocks and inline code, where a `[x](y)` is a link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text, lower case, without punctuation, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), Counter()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M):
        name = slug(heading)
        found.add(name if not seen[name] else f"{name}-{seen[name]}")  # GitHub numbers repeats
        seen[name] += 1
    return found


def broken_links(page: Path) -> list[str]:
    """Each relative link of `page` whose file is missing, or whose #anchor is no heading there."""
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked offline
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page)


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# A page\n\n## Its part\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[fine](other.md#its-part) [gone](missing.md) [no part](other.md#nothing) [self](#a-title)\n"
        "`[code](is-not-a-link.md)`\n\n```\n[neither](in-a-block.md)\n```\n# A title\n",
        encoding="utf-8",
    )
    assert [entry.split(":")[0] for entry in broken_links(page)] == ["missing.md", "other.md#nothing"]


def test_slugs_follow_github():
    assert slug("XLA exports (`attend export --xla`)") == "xla-exports-attend-export---xla"
    assert (
        slug("The paper's result: attention does not fall apart")
        == "the-papers-result-attention-does-not-fall-apart"
    )


# === Commands ===


def table_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^\| `(attend [^`]+)` \|", readme, re.M)


def attend_help(*command: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "app", *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return completed.stdout


def test_the_command_table_is_attend_help():
    in_help = re.findall(r"^    (\w+)", attend_help(), re.M)  # the COMMAND list, one a line
    assert in_help and sorted(command.split()[1] for command in table_commands()) == sorted(in_help)


@pytest.mark.parametrize("command", table_commands(), ids=lambda command: command.split()[1])
def test_each_option_of_the_table_is_in_its_command_help(command):
    name = command.split()[1]
    options = set(re.findall(r"(--[a-z][\w-]*)", command))
    assert options, command
    assert options <= set(re.findall(r"(--[a-z][\w-]*)", attend_help(name)))


def shown_commands() -> list[tuple[str, str]]:
    """`(page, command)` for each `attend …` line of the pages' bash blocks (continuations joined)."""
    found = []
    for page in PAGES:
        for block in re.findall(r"^```bash[^\n]*\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line.startswith("attend "):
                    found.append((str(page.relative_to(ROOT)), line))
    return found


def test_the_pages_show_commands():
    pages = {page for page, _ in shown_commands()}
    assert {"README.md", "docs/serving.md", "docs/training.md"} <= pages


@pytest.mark.parametrize("page, command", shown_commands())
def test_each_command_shown_parses(page, command):
    try:
        build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as error:
        pytest.fail(f"{page}: `{command}` does not parse (exit {error.code})")


# === Facts that drift from the code ===


def presets_table() -> dict[str, str]:
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    part = text.split("## Presets", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", part, re.M))


def test_the_presets_page_lists_every_preset_with_its_data_folder_and_epochs():
    rows = presets_table()
    assert sorted(rows) == sorted(available_presets())
    for preset, row in rows.items():
        config = load_config(preset)
        assert f"`data/{config.corpus_name}/`" in row, (preset, config.corpus_name)
        for epochs in re.findall(r"(\d+) epochs", row):
            assert int(epochs) == config.train.epochs, preset


def test_the_dates_page_counts_the_generators_formats():
    text = (ROOT / "docs" / "transfer.md").read_text(encoding="utf-8")
    total, english, spanish, numeric = map(
        int, re.search(r"(\d+) formats \((\d+) English, (\d+) Spanish, (\d+) numeric\)", text).groups()
    )
    counts = Counter(form.language for form in FORMATS)
    assert (total, english, spanish, numeric) == (len(FORMATS), counts["en"], counts["es"], counts["numeric"])
    assert f"`data/{load_config('dates').corpus_name}/`" in text


def code_references() -> list[tuple[str, str, str]]:
    """`(page, path, name)` for each `app/….py` (or `app/….py: name`) the pages cite."""
    found = []
    for page in PAGES:
        for path, name in re.findall(
            r"`(app/[\w/]+(?:\.py|/))(?:: (\w+))?`", page.read_text(encoding="utf-8")
        ):
            found.append((str(page.relative_to(ROOT)), path, name))
    return found


def test_the_code_the_pages_cite_exists():
    assert len(code_references()) > 10
    missing = [
        f"{page}: {path}{': ' + name if name else ''}"
        for page, path, name in code_references()
        if not (ROOT / path).exists()
        or (name and not re.search(rf"^\s*(def|class) {name}\b", (ROOT / path).read_text(), re.M))
    ]
    assert not missing
