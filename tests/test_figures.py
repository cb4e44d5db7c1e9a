"""Every course figure is made by code in the repo, and that code runs (at toy size)."""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "walkthrough"))
import make_figures  # noqa: E402

# Chapters run tiny models: one thread is faster, and never waits for a second core busy elsewhere.
pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPTS = make_figures.scripts()
CHAPTERS = sorted(p for p in (ROOT / "walkthrough").glob("*.md") if re.match(r"(\d\d|[A-Z])_", p.name))
IMAGE = re.compile(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)")


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_figure_script_runs(script, tmp_path, monkeypatch):
    """A figure script's make(out, toy=True) writes at least one PNG named after its chapter."""
    monkeypatch.chdir(tmp_path)
    make_figures.load(script).make(tmp_path, toy=True)
    pngs = list(tmp_path.glob(f"{script.stem}_*.png"))
    assert pngs, f"{script.name} wrote no {script.stem}_*.png"
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png.name} is not a PNG"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_figures_exist_and_have_code(chapter):
    """Every figure a chapter shows is committed, and a figure script of that chapter exists to remake it."""
    for rel in IMAGE.findall(chapter.read_text(encoding="utf-8")):
        png = ROOT / "walkthrough" / rel
        assert png.is_file(), f"{chapter.name} shows {rel}, which is not in walkthrough/ (run `make figures`)"
        stem = png.name.split("_")[0]
        assert (make_figures.FIGURES / f"{stem}.py").is_file(), f"{rel}: no walkthrough/figures/{stem}.py makes it"
