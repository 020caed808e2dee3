"""Every link between the project's own Markdown files leads somewhere: the file exists, and
a `#fragment` names one of the headings of the file it points into (as GitHub spells a
heading's anchor). A renamed section or a moved file fails here, not in a reader's browser."""

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), ![alt](image)
FENCED = re.compile(r"```.*?```", re.S)  # a code block: neither its lines nor its links are the page's
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # a link inside code is an example, not a link


def markdown_files() -> list:
    """The tracked .md files (a fresh clone's), else every .md outside hidden and vendored folders."""
    try:
        listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = []
    found = [ROOT / p for p in listed] or [p for p in ROOT.rglob("*.md") if not any(part.startswith(".") or part == "node_modules"
                                                                                   for part in p.relative_to(ROOT).parts)]
    return sorted(p for p in found if p.is_file())


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped (letters of any
    script, digits, '-' and '_' kept), each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.replace("`", "")).replace(" ", "-")


@cache
def anchors(path: Path) -> set:
    """The anchors of a file's headings (code in a heading is part of its name); a repeated
    heading gets -1, -2, ... as on GitHub."""
    seen, out = {}, set()
    for line in FENCED.sub("", path.read_text(encoding="utf-8")).splitlines():
        if m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = anchor(m.group(1))
            out.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return out


def links(path: Path) -> list:
    """(target, fragment) of each relative link in a file (web links and mail addresses left out)."""
    out = []
    for m in LINK.finditer(CODE.sub("", path.read_text(encoding="utf-8"))):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file, _, fragment = target.partition("#")
        out.append((file, fragment))
    return out


def test_the_checker_reads_headings_and_links_as_github_does(tmp_path):
    assert anchor("At 12 blocks: all-mpnet-base-v2 on TREC (first seeds)") == "at-12-blocks-all-mpnet-base-v2-on-trec-first-seeds"
    assert anchor("7. What is ours, not the paper's") == "7-what-is-ours-not-the-papers"
    assert anchor("The backbone: BERT or MPNet") == "the-backbone-bert-or-mpnet"
    assert anchor("τ and the `--tau` option") == "τ-and-the---tau-option"
    page = tmp_path / "page.md"
    page.write_text("# Title\n## Same\n## Same\n## The `--tau` option\n```\n# not a heading [x](nowhere.md)\n```\n"
                    "[a](other.md#part) ![b](img.png) [c](https://example.com) `[d](code.md)` [e](#same-1)\n")
    assert anchors(page) == {"title", "same", "same-1", "the---tau-option"}
    assert links(page) == [("other.md", "part"), ("img.png", ""), ("", "same-1")]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_between_the_projects_files_leads_somewhere(path):
    broken = []
    for file, fragment in links(path):
        target = (path.parent / file).resolve() if file else path
        if not target.exists():
            broken.append(f"{file}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(f"{file}#{fragment}: no such heading in {target.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)
