"""The README stays a front door and every relative link in it and in ``docs/`` leads somewhere.

A link resolves when its file or folder exists; a ``#fragment`` must name a heading of the target
page, spelled as GitHub spells heading anchors. Links inside code are not links. A repository path
named in code (``include/connectors/base.py``) must exist too, so a moved file shows up here;
placeholders (``<system>``) and the files a user creates or a run writes are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = sorted([README, *DOCS.glob("*.md")])
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
PATH_IN_CODE = re.compile(r"`([^`\s]+/[^`\s]*)`")
TOP_LEVEL = {path.name for path in REPO.iterdir() if not path.name.startswith(".")}
# Made by the user (docker/.env, docker/secrets/) or written by a run (bench/results/<name>.json).
NOT_IN_THE_TREE = re.compile(r"^(docker/\.env|docker/secrets/|bench/results/\w+\.json$)")


def _prose(text: str) -> str:
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = anchor(heading)
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return out


def links(page: Path) -> list[str]:
    return [target for target in LINK.findall(_prose(page.read_text())) if not EXTERNAL.match(target)]


def broken(page: Path, target: str) -> str | None:
    path, _, fragment = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    if not resolved.exists():
        shown = resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved
        return f"{target}: no such file {shown}"
    if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
        return f"{target}: no heading '#{fragment}' in {resolved.relative_to(REPO)}"
    return None


def named_paths(page: Path) -> list[str]:
    """Repository paths named in code spans: the first part a top-level entry, no placeholder."""
    found = []
    for text in PATH_IN_CODE.findall(FENCE.sub("", page.read_text())):
        path = text.rstrip(".,:;")
        if path.split("/")[0] in TOP_LEVEL and not re.search(r"[<>*{}$]", path):
            found.append(path)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_path_named_in_code_exists(page: Path) -> None:
    missing = [
        path for path in named_paths(page) if not (REPO / path).exists() and not NOT_IN_THE_TREE.match(path)
    ]

    assert missing == [], f"{page.relative_to(REPO)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    problems = [problem for target in links(page) if (problem := broken(page, target))]

    assert problems == [], f"{page.relative_to(REPO)}: broken links:\n  " + "\n  ".join(problems)


def test_the_readme_fits_in_200_lines() -> None:
    lines = len(README.read_text().splitlines())

    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(REPO / target.partition("#")[0]).resolve() for target in links(README)}

    assert [page.name for page in DOCS.glob("*.md") if page.resolve() not in linked] == []


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        pytest.param("Local stack (`make run`)", "local-stack-make-run", id="code-and-parentheses"),
        pytest.param("What was tuned, and why", "what-was-tuned-and-why", id="comma"),
        pytest.param("Stand-ins and what is real", "stand-ins-and-what-is-real", id="hyphen-kept"),
    ],
)
def test_anchor_spells_headings_as_github_does(heading: str, expected: str) -> None:
    assert anchor(heading) == expected


def test_a_missing_file_and_a_missing_heading_are_reported() -> None:
    page = DOCS / "architecture.md"

    assert broken(page, "nowhere.md") == "nowhere.md: no such file docs/nowhere.md"
    assert broken(page, "testing.md#no-such-heading") == (
        "testing.md#no-such-heading: no heading '#no-such-heading' in docs/testing.md"
    )
    assert broken(page, "testing.md#duration") is None


def test_named_paths_are_repository_paths_without_placeholders(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "`include/connectors/base.py`, `tests/unit/connectors/test_<system>.py`, `.local/run/mail/`,\n"
        "`approvals.yaml`, `include/gone.py`.\n```\ninclude/in_a_fence.py\n```\n"
    )

    assert named_paths(page) == ["include/connectors/base.py", "include/gone.py"]
