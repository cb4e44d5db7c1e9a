"""`make figures`: run every walkthrough/figures/chNN.py and write the course's PNGs beside them.

Each figure script exposes `make(out_dir, toy=False)` and writes PNGs named `chNN_*.png` into
`out_dir`. `toy=True` runs the same code at a size that takes seconds (the test suite does this,
so no figure's code can rot); the committed PNGs are made at full size by `make figures`.

    python walkthrough/make_figures.py                 # all figures, full size, into walkthrough/figures/
    python walkthrough/make_figures.py --only ch04     # one chapter's
    python walkthrough/make_figures.py --toy --out /tmp/figs
"""
import argparse
import importlib.util
import sys
import time
from pathlib import Path

FIGURES = Path(__file__).resolve().parent / "figures"


def scripts():
    """The figure scripts, in chapter order."""
    return sorted(FIGURES.glob("ch*.py"))


def load(path):
    """Import a figure script by path (walkthrough/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"figures_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(FIGURES), help="directory for the PNGs (default: walkthrough/figures)")
    parser.add_argument("--toy", action="store_true", help="tiny sizes, seconds per figure (what the tests run)")
    parser.add_argument("--only", default="", help="comma-separated script names, e.g. ch03,ch04")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    chosen = [p for p in scripts() if not only or p.stem in only]
    unknown = only - {p.stem for p in scripts()}
    if unknown:
        print(f"make_figures: error: --only {sorted(unknown)}: no such script in {FIGURES}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in chosen:
        t0 = time.time()
        load(path).make(out, toy=args.toy)
        print(f"{path.stem}: {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
