"""The documentation: every relative link and #anchor in README.md, docs/ and the model card resolves, and the
README stays a landing page that keeps the disclaimer and the test command that .ci/run runs."""
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "model" / "README.md",
         ROOT / "brain_mri" / "model_card.md"]
SKIPPED = ("http://", "https://", "mailto:")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")  # [name]: target
HTML_LINK = re.compile(r"\b(?:href|src)=\"([^\"]+)\"")
HTML_ANCHOR = re.compile(r"\b(?:id|name)=\"([^\"]+)\"")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")


def prose_lines(text: str):
    """The lines outside the front matter and fenced code blocks, with Jinja tags and code spans removed."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":  # YAML front matter (the Space's, the card's)
        end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), 0)
        lines = lines[end + 1:]
    fence = None
    for line in lines:
        marker = re.match(r"^\s*(```|~~~)", line)
        if marker:
            fence = None if fence == marker.group(1) else fence or marker.group(1)
            continue
        if fence is None:
            yield re.sub(r"\{%.*?%\}", "", line)  # the card template's control tags hide no heading


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lowercase, punctuation dropped but for hyphens and underscores,
    spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set:
    """The anchors of a Markdown page: its headings' slugs (a repeated one gets -1, -2, ...) and HTML ids."""
    found, seen = set(), {}
    for line in prose_lines(page.read_text()):
        found.update(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            found.add(f"{base}-{seen[base]}" if base in seen else base)
            seen[base] = seen.get(base, 0) + 1
    return found


def links(page: Path) -> list:
    """Every link target of a page outside code, but those to the web and templated ones (``{{ f }}``)."""
    found = []
    for line in prose_lines(page.read_text()):
        line = re.sub(r"`[^`]*`", "", line)
        for pattern in (LINK, REFERENCE, HTML_LINK):
            found += [t for t in pattern.findall(line) if not t.startswith(SKIPPED) and "{{" not in t]
    return found


def broken(page: Path) -> list:
    """The links of ``page`` whose file is missing, or whose #anchor is no heading of the Markdown they name."""
    bad = []
    for target in links(page):
        path, _, fragment = unquote(target).partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            bad.append(f"{target} (no such file)")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            bad.append(f"{target} (no such heading in {file.name})")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert page.is_file()
    assert not broken(page), f"{page.relative_to(ROOT)}: broken links: {broken(page)}"


def test_the_checker_finds_what_is_broken(tmp_path):
    (tmp_path / "other.md").write_text("# Other sources (`--extra-sources`)\n## Speed\n## Speed\n")
    page = tmp_path / "page.md"
    page.write_text("---\nlink: [x](front-matter.md)\n---\n# Page\n"
                    "[a](other.md#other-sources---extra-sources) [b](other.md#speed-1) [c](#page) "
                    "![d](missing.png) [e](other.md#speed-2) [f](https://example.org/x.md) `[g](in-code.md)`\n"
                    "```\n[h](in-a-block.md)\n```\n[i]: other.md#nowhere\n")
    assert [b.split(" ")[0] for b in broken(page)] == ["missing.png", "other.md#speed-2", "other.md#nowhere"]


def test_slugs_follow_github():
    assert slug("Other sources (`--extra-sources`)") == "other-sources---extra-sources"
    assert slug("Do the heatmaps point at the tumour?") == "do-the-heatmaps-point-at-the-tumour"
    assert slug("Earlier attempts (before the head crop; same recipe, validation decided)") == \
        "earlier-attempts-before-the-head-crop-same-recipe-validation-decided"
    assert slug("[Speed](#speed) of model_v3") == "speed-of-model_v3"


def readme_body() -> list:
    """README.md's lines below the Space's front matter."""
    lines = (ROOT / "README.md").read_text().splitlines()
    return lines[lines.index("---", 1) + 1:]


def test_the_readme_is_a_landing_page_with_the_disclaimer_and_the_ci_command():
    from brain_mri.config import DISCLAIMER

    body = readme_body()
    assert len(body) <= 150
    prose = " ".join(" ".join(re.sub(r"^>\s?", "", line) for line in body).replace("**", "").split())
    assert " ".join(DISCLAIMER.split()) in prose, "the README no longer states brain_mri.config.DISCLAIMER"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = next(line for line in ci if "pytest" in line and not line.startswith("#"))
    assert command in body, command  # .ci/run runs the README's test command, word for word
    assert "docs/screenshot.png" in "\n".join(body) and (ROOT / "docs" / "screenshot.png").stat().st_size < 300_000
