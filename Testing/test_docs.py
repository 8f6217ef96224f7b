"""The documentation stays true to the tree: README length, links, and the command-line pages.

* README.md is a front page of at most 200 lines (issue 29); the details live in docs/.
* Every relative link in README.md, docs/*.md, CHANGES.md and benchmarks/RESULTS.md names a
  file that exists, and every ``#anchor`` names a heading of that file (GitHub's slugs).
* docs/cli.md names only options the ``her2radiomics`` parsers have, documents every command,
  and each command's reference table lists exactly that command's options.
* The scripted-CLI section of docs/slicer.md names only flags of HER2RadiomicsCLI.xml.

Each check is a function returning its problems, so the negative cases below can show on
small synthetic texts that it fails when it should.
"""
from __future__ import annotations

import argparse
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINKED_PAGES = [ROOT / "README.md", ROOT / "CHANGES.md", ROOT / "benchmarks" / "RESULTS.md",
                *DOCS]
README_MAX_LINES = 200          # issue 29: the README is a front page, details in docs/

_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FLAG = re.compile(r"(?<![\w-])--[A-Za-z][A-Za-z0-9-]*")
_SECTION = re.compile(r"^### `her2radiomics(?: ([a-z -]+))?`\s*$")


# --- helpers ---------------------------------------------------------------------------------

def _prose_lines(text: str):
    """Lines outside fenced code blocks (headings and links inside code are not real)."""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set:
    """Every anchor GitHub makes for the headings of ``text`` (repeats get -1, -2, ...)."""
    seen, out = {}, set()
    for line in _prose_lines(text):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problems(text: str, page: Path) -> list:
    """Relative links of ``text`` (as if it were ``page``) that lead nowhere."""
    problems = []
    for line in _prose_lines(text):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):     # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if path and not dest.exists():
                problems.append(f"{page.name}: {target}: no such file")
                continue
            if anchor:
                if dest.suffix != ".md":
                    problems.append(f"{page.name}: {target}: anchor into a non-Markdown file")
                    continue
                heads = anchors(text if dest == page else dest.read_text(encoding="utf-8"))
                if anchor not in heads:
                    problems.append(f"{page.name}: {target}: no heading '#{anchor}'")
    return problems


def parser_options() -> dict:
    """``{"extract": {"--out", ...}, "station create": {...}, "": top-level}``: every
    parser of the ``her2radiomics`` command line with its long and short option strings."""
    from HER2RadiomicsLib.cli import build_parser

    out = {}

    def walk(p, path):
        out[" ".join(path)] = {s for a in p._actions for s in a.option_strings}
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(sub, path + (name,))

    walk(build_parser(), ())
    return out


def cli_doc_problems(text: str, options: dict) -> list:
    """What docs/cli.md gets wrong against the parsers ``options``."""
    known = set().union(*options.values())
    # code examples count too: a copied command line must run
    problems = [f"{flag}: no command has this option"
                for flag in sorted(set(_FLAG.findall(text))) if flag not in known]
    sections, current = {}, None
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            current = (m.group(1) or "").strip()
            sections[current] = set()
        elif line.startswith("#"):
            current = None
        elif current is not None and line.startswith("| `"):
            cell = line.split("|")[1]
            sections[current] |= set(re.findall(r"`(-{1,2}[A-Za-z][\w-]*)`", cell))
    for command, opts in options.items():
        if command not in sections:
            problems.append(f"her2radiomics {command}: command not documented")
            continue
        documented = sections[command]
        wanted = opts - {"-h", "--help"}
        for flag in sorted(wanted - documented):
            problems.append(f"her2radiomics {command}: option {flag} not in its table")
        for flag in sorted(documented - wanted):
            problems.append(f"her2radiomics {command}: table lists {flag}, which it lacks")
    return problems


def xml_flags() -> set:
    root = ET.parse(ROOT / "HER2RadiomicsCLI" / "HER2RadiomicsCLI.xml").getroot()
    return {"--" + e.text.strip().lstrip("-") for e in root.iter("longflag")}


def scripted_cli_section(text: str) -> str:
    m = re.search(r"^## Scripted CLI.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    return m.group(0) if m else ""


def scripted_cli_problems(section: str, flags: set) -> list:
    if not section:
        return ["no '## Scripted CLI' section"]
    return [f"{f}: not a flag of HER2RadiomicsCLI.xml"
            for f in sorted(set(_FLAG.findall(section))) if f not in flags]


def readme_problems(text: str) -> list:
    n = len(text.splitlines())
    return [f"README.md has {n} lines (at most {README_MAX_LINES})"] \
        if n > README_MAX_LINES else []


# --- the real documentation ------------------------------------------------------------------

def test_readme_is_a_front_page():
    assert readme_problems((ROOT / "README.md").read_text(encoding="utf-8")) == []


def test_docs_exist_and_the_readme_links_each():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert DOCS, "docs/ holds no page"
    missing = [p.name for p in DOCS if f"(docs/{p.name})" not in readme]
    assert not missing, f"README links no docs page named {missing}"


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert link_problems(page.read_text(encoding="utf-8"), page) == []


def test_cli_page_matches_the_parsers():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert cli_doc_problems(text, parser_options()) == []


def test_readme_names_only_real_options():
    known = set().union(*parser_options().values())
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert sorted(set(_FLAG.findall(text)) - known) == []


def test_scripted_cli_section_names_only_xml_flags():
    section = scripted_cli_section((ROOT / "docs" / "slicer.md").read_text(encoding="utf-8"))
    assert scripted_cli_problems(section, xml_flags()) == []
    assert "--inputVolume" in section           # the section is the one it claims to be


# --- each check can fail ---------------------------------------------------------------------

def test_a_long_readme_fails():
    assert readme_problems("x\n" * README_MAX_LINES) == []
    assert readme_problems("x\n" * (README_MAX_LINES + 1)) == [
        f"README.md has {README_MAX_LINES + 1} lines (at most {README_MAX_LINES})"]


@pytest.mark.parametrize("text, expect", [
    ("see [gone](missing.md)", "no such file"),
    ("see [here](#nowhere)\n\n## Somewhere", "no heading '#nowhere'"),
    ("see [x](other.md#nowhere)", "no heading '#nowhere'"),
    ("![shot](img/none.png)", "no such file"),
    ("see [x](other.txt#a)", "anchor into a non-Markdown file"),
])
def test_a_broken_link_fails(tmp_path, text, expect):
    (tmp_path / "other.md").write_text("# Other\n\n## Somewhere else\n")
    (tmp_path / "other.txt").write_text("text\n")
    page = tmp_path / "page.md"
    page.write_text(text)
    problems = link_problems(text, page)
    assert problems and expect in problems[0]


def test_good_links_pass(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Somewhere: `else`\n\n## Again\n## Again\n")
    page = tmp_path / "page.md"
    text = ("[a](other.md) [b](other.md#somewhere-else) [c](#mine) [d](other.md#again-1) "
            "[e](https://example.org/x#y)\n\n## Mine\n\n```\n[f](in-code.md)\n```\n")
    assert link_problems(text, page) == []


_OPTS = {"": {"-h", "--help", "--debug"}, "extract": {"-h", "--out", "--rings"},
         "station": {"-h"}, "station serve": {"-h", "--port"}}
_GOOD = """Run `extract --out f.csv --rings 3,5,8`.

### `her2radiomics`

| option | default | what |
|---|---|---|
| `--debug` |  | tracebacks |

### `her2radiomics extract`

| option | default | what |
|---|---|---|
| `--out` |  | table |
| `--rings` |  | distances |

### `her2radiomics station`

No options of its own.

### `her2radiomics station serve`

| option | default | what |
|---|---|---|
| `--port` | `8080` | port |
"""


def test_synthetic_cli_page_passes():
    assert cli_doc_problems(_GOOD, _OPTS) == []


@pytest.mark.parametrize("change, expect", [
    (lambda t: t + "\nAlso `--frobnicate`.\n", "--frobnicate: no command has this option"),
    (lambda t: t.replace("| `--rings` |  | distances |\n", ""),
     "her2radiomics extract: option --rings not in its table"),
    (lambda t: t.replace("| `--port` | `8080` | port |", "| `--port` | | p |\n| `--out` | | o |"),
     "her2radiomics station serve: table lists --out, which it lacks"),
    (lambda t: t.replace("### `her2radiomics station serve`", "### `her2radiomics station x`"),
     "her2radiomics station serve: command not documented"),
])
def test_a_wrong_cli_page_fails(change, expect):
    assert expect in cli_doc_problems(change(_GOOD), _OPTS)


def test_a_flag_missing_from_the_xml_fails():
    section = "## Scripted CLI\n\n`--inputVolume` and `--outputTabel`\n\n## Next\n`--other`\n"
    assert scripted_cli_problems(scripted_cli_section(section), {"--inputVolume"}) == [
        "--outputTabel: not a flag of HER2RadiomicsCLI.xml"]
    assert scripted_cli_problems(scripted_cli_section("## Other\n"), set()) == [
        "no '## Scripted CLI' section"]
