"""The walkthrough cannot drift from the code: every chapter runs, and quoted code is the package's.

In walkthrough/*.md, a ```python block whose first line is `# from minigrpo/<file>.py` is a
quotation: it must appear verbatim in that file (it is shown, not run). Every other ```python
block runs, in order, in one namespace per chapter, inside a temporary directory.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# chapters are NN_name.md, appendices A_name.md; README.md (the syllabus) is not a chapter
CHAPTERS = sorted(p for p in (ROOT / "walkthrough").glob("*.md") if re.match(r"(\d\d|[A-Z])_", p.name))
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
QUOTE = re.compile(r"# from (minigrpo/[\w/]+\.py)\n")

# Chapters run tiny models: one thread is faster, and never waits for a second core busy elsewhere.
pytestmark = pytest.mark.usefixtures("one_thread")


def blocks(chapter):
    return BLOCK.findall(chapter.read_text(encoding="utf-8"))


def test_there_are_chapters():
    """The walkthrough exists and every chapter has code."""
    assert len(CHAPTERS) >= 1
    for ch in CHAPTERS:
        assert blocks(ch), f"{ch.name} has no python blocks"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_quoted_code_is_the_package_code(chapter):
    """A block marked `# from minigrpo/x.py` appears verbatim in that file."""
    for code in blocks(chapter):
        m = QUOTE.match(code)
        if m:
            source = (ROOT / m.group(1)).read_text(encoding="utf-8")
            body = code[m.end():]
            assert body.strip() and body in source, f"{chapter.name}: quoted block differs from {m.group(1)}:\n{body}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_runs(chapter, tmp_path, monkeypatch):
    """Every runnable block of the chapter executes without error (its asserts included)."""
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": f"walkthrough_{chapter.stem}"}
    for i, code in enumerate(blocks(chapter)):
        if QUOTE.match(code):
            continue
        exec(compile(code, f"{chapter.name}[block {i}]", "exec"), ns)
