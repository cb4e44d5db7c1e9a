"""Shared test settings: hypothesis profiles (default, thorough, grade) and the `slow` opt-in marker."""
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow]
)
# `make grade`: the same checks, reproducible (derandomised) and one bug reported at a time
settings.register_profile(
    "grade", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True, database=None, report_multiple_bugs=False,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_collection_modifyitems(config, items):
    """`slow` tests run only when asked for with `-m slow`."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest -m slow`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and never wait for a second core busy elsewhere.

    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
