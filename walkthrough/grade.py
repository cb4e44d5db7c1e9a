"""`make grade`: run the project's own tests against your walkthrough/exercises/, one line per exercise.

    python walkthrough/grade.py                   # your implementations  (make grade)
    python walkthrough/grade.py --ex kl_k3        # one exercise          (make grade EX=kl_k3)
    python walkthrough/grade.py --solutions       # the reference         (make grade-solutions)

Every test marked `@pytest.mark.exercise("name")` calls the exercise through tests/adapters.py, which
picks your function (MINIGRPO_IMPL=student) or the reference (the package, or walkthrough/solutions/).
An exercise is done when all its tests pass. Otherwise its line names the first failing test's
property (its docstring) and, for a property test, hypothesis's minimal falsifying example; a stub
still raising NotImplementedError is "not done yet". Exit status 0 only if no exercise fails.
For the full traceback of a failure, run pytest itself, e.g.
    MINIGRPO_IMPL=student .venv/bin/python -m pytest -m 'exercise' tests/test_loss.py -k k3
"""
import argparse
import contextlib
import io
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 220  # a failure line's example is trimmed to about this many characters


def first_line(text):
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else "(no docstring)"


def example(exc):
    """Hypothesis's falsifying example from the exception's notes, on one line; '' if there is none."""
    notes = [n for n in getattr(exc, "__notes__", []) if n.startswith(("Falsifying example", "Draw "))]
    parts = []
    for note in notes:
        lines = [ln.strip() for ln in note.splitlines()]
        if lines[0].startswith("Falsifying example"):
            lines = [re.sub(r"\s+#.*$", "", ln) for ln in lines[1:]]  # hypothesis's "# or any other …"
            parts += [ln.rstrip(",") for ln in lines if ln and ln != ")" and not ln.startswith("#")]
        else:  # "Draw 1: tensor(...)" from st.data()
            parts.append(re.sub(r"\s+", " ", note.strip()))
    text = re.sub(r"\s+", " ", ", ".join(p for p in parts if p))
    return text if len(text) <= WIDTH else text[:WIDTH] + " …"


class Grader:
    """A pytest plugin: keeps the graded tests (of the chosen exercises) and what happened to each."""

    def __init__(self, wanted):
        self.wanted, self.tests, self.errors, self.events = wanted, {}, {}, {}

    def pytest_collection_modifyitems(self, config, items):
        keep = []
        for item in items:
            mark = item.get_closest_marker("exercise")
            if mark and (not self.wanted or mark.args[0] in self.wanted):
                self.tests[item.nodeid] = (mark.args[0], first_line(item.obj.__doc__))
                keep.append(item)
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep

    def pytest_runtest_makereport(self, item, call):  # runs before the report is logged; returns None
        if call.excinfo is not None:
            self.errors[item.nodeid] = call.excinfo.value

    def pytest_runtest_logreport(self, report):
        if report.nodeid not in self.tests or (report.passed and report.when != "call"):
            return
        name, doc = self.tests[report.nodeid]
        if report.passed:
            outcome = ("passed", "")
        elif report.skipped:
            outcome = ("skipped", report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr))
        else:
            outcome = ("failed", self.verdict(doc, self.errors.get(report.nodeid)))
        self.events.setdefault(name, []).append(outcome)

    @staticmethod
    def verdict(doc, exc):
        if isinstance(exc, BaseExceptionGroup):  # several distinct bugs: the first is enough
            exc = exc.exceptions[0]
        line = f'fails "{doc.rstrip(".")}"'
        ex = example(exc) if exc is not None else ""
        if ex:
            line += f" — minimal example: {ex}"
        if exc is not None and not isinstance(exc, AssertionError):
            line += f"\n      raised {type(exc).__name__}: {first_line(str(exc))[:WIDTH]}"
        return line


def summary(name, chapter, events):
    """(ok, the exercise's line)."""
    head = f"{name} (ch. {chapter})"
    for kind, text in events:
        if kind == "failed":
            return False, f"✗ {head}: {text}"
        if kind == "skipped" and "not done yet" in text:
            return False, f"✗ {head}: not done yet"
    if any(kind == "skipped" for kind, _ in events):
        reason = next(text for kind, text in events if kind == "skipped").removeprefix("Skipped: ")
        return True, f"· {head}: skipped, {reason}"
    return True, f"✓ {head}: done ({len(events)} checks)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solutions", action="store_true", help="grade the reference implementations instead")
    parser.add_argument("--ex", action="append", default=[], help="only this exercise (repeat, or a comma list)")
    args = parser.parse_args(argv)
    os.environ["MINIGRPO_IMPL"] = "solutions" if args.solutions else "student"
    os.environ.setdefault("HYPOTHESIS_PROFILE", "grade")
    sys.path.insert(0, str(ROOT / "tests"))
    from adapters import EXERCISES

    wanted = [e for arg in args.ex for e in arg.split(",") if e]
    unknown = [e for e in wanted if e not in EXERCISES]
    if unknown:
        parser.error(f"unknown exercise {unknown[0]!r}; the exercises are {', '.join(EXERCISES)}")
    files = [str(p) for p in sorted((ROOT / "tests").glob("test_*.py")) if "mark.exercise(" in p.read_text()]
    grader = Grader(set(wanted))
    os.chdir(ROOT)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = pytest.main([*files, "-q", "-m", "exercise", "-p", "no:cacheprovider", "-W", "ignore"],
                           plugins=[grader])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED):
        print(out.getvalue())  # the tests could not run at all (an import error, say): show pytest's report
        print(f"grade: pytest stopped with {code!r}")
        return 2
    done = True
    for name, (chapter, _) in EXERCISES.items():
        if wanted and name not in wanted:
            continue
        ok, line = summary(name, chapter, grader.events.get(name, [("failed", "no graded test ran")]))
        print(line)
        done &= ok
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
