"""The grader cannot rot: it passes the reference, reports the shipped stubs as not done, and every stub is a stub."""
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import adapters

ROOT = Path(__file__).resolve().parents[1]


def grade(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MINIGRPO_IMPL", None)
    return subprocess.run([sys.executable, str(ROOT / "walkthrough" / "grade.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)


def test_solutions_pass():
    """Against the reference, graded exercises print ✓ with their number of checks and the exit status is 0."""
    out = grade("--solutions", "--ex", "kl_k3,dual_ascent_step")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and re.fullmatch(r"✓ kl_k3 \(ch\. 6\): done \(\d+ checks\)", lines[0]), lines
    assert re.fullmatch(r"✓ dual_ascent_step \(ch\. 12\): done \(\d+ checks\)", lines[1]), lines


def test_stubs_are_not_done_yet():
    """The shipped stubs give one "not done yet" line each, in chapter order, no traceback, and exit status 1."""
    out = grade("--ex", "group_advantages", "--ex", "kl_k3,lora_merge")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["✗ group_advantages (ch. 4): not done yet", "✗ kl_k3 (ch. 6): not done yet",
                                       "✗ lora_merge (ch. 8): not done yet"]
    assert out.stderr == ""


def test_unknown_exercise_is_named():
    """A misspelt exercise name is refused with the list of exercises."""
    out = grade("--ex", "kl_k4")
    assert out.returncode == 2 and "unknown exercise 'kl_k4'" in out.stderr and "kl_k3" in out.stderr


@pytest.mark.parametrize("name", adapters.EXERCISES)
def test_every_exercise_has_a_stub_and_graded_tests(name):
    """Each exercise's stub has the adapter's signature, a docstring with its expected time, raises "not done yet",
    and at least two graded tests carry its marker."""
    chapter, file = adapters.EXERCISES[name]
    module = importlib.import_module(f"walkthrough.exercises.{file}")
    stub = getattr(module, name)
    assert inspect.signature(stub) == inspect.signature(getattr(adapters, name))
    assert "Expected time" in module.__doc__ and f"chapter {chapter}" in module.__doc__
    assert len(stub.__doc__) > 300
    args = [None] * len([p for p in inspect.signature(stub).parameters.values() if p.default is p.empty])
    with pytest.raises(NotImplementedError, match="not done yet"):
        stub(*args)
    marks = sum((ROOT / "tests" / f).read_text().count(f'exercise("{name}")')
                for f in os.listdir(ROOT / "tests") if f.startswith("test_"))
    parametrised = name == "group_advantages" or name == "grpo_loss"  # one marker line can grade several tests
    assert marks >= (1 if parametrised else 2)
