"""Every relative link in README.md and docs/*.md must point at a file that exists, and every
``#anchor`` at a heading of the target: docs that send a reader nowhere are a bug."""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _prose_lines(text):
    """Lines outside fenced code blocks (links there are examples, not links)."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def _anchors(path):
    seen, out = {}, set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _relative_links(path):
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, ...
                continue
            yield number, target


def test_slug_follows_github_rules():
    assert _slug("2.2 Feature pyramid: P3–P7 without padding") == "22-feature-pyramid-p3p7-without-padding"
    assert _slug("1.2 YOLACT++") == "12-yolact"
    assert _slug("The `yolact` mapper") == "the-yolact-mapper"


def test_the_link_checker_finds_a_broken_link(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("# Title\nsee [b](b.md) and [t](#title)\n```\n[not a link](x.md)\n```\n", encoding="utf-8")
    assert list(_relative_links(doc)) == [(2, "b.md"), (2, "#title")]
    assert _anchors(doc) == {"title"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for line, target in _relative_links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"line {line}: {target} (no file {os.path.relpath(dest, ROOT)})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"line {line}: {target} (no heading #{anchor} in {os.path.relpath(dest, ROOT)})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_docs_named_in_the_repository_exist():
    """A docs/<name>.md mentioned in code, configs or docs must exist."""
    missing = set()
    files = [p for p in ROOT.iterdir() if p.is_file()]
    for folder in ("yolact_d2", "tools", "configs", "demo", "docs", "tests", ".ci", "dev"):
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file()] if (ROOT / folder).is_dir() else []
    for path in files:
        if path.suffix not in {".py", ".md", ".yaml", ".sh", ".cfg", ".toml", ""} or "__pycache__" in path.parts:
            continue
        for name in re.findall(r"docs/([A-Za-z0-9_]+\.md)", path.read_text(encoding="utf-8", errors="replace")):
            if not (ROOT / "docs" / name).exists():
                missing.add(f"{path.relative_to(ROOT)}: docs/{name}")
    assert not missing, "references to missing docs:\n" + "\n".join(sorted(missing))
