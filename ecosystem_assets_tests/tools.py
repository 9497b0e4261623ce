"""Outside commands some tests need (kubectl, terraform, promtool, a headless Chromium, checkov).

On a laptop without one, the tests that need it skip, saying how to install it. In CI a skip would
hide an unchecked alert rule or manifest behind a green run, so `.ci/run` sets
``ECOSYSTEM_REQUIRE_TOOLS=1`` and a missing command fails the test instead.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

REQUIRE = "ECOSYSTEM_REQUIRE_TOOLS"


def missing(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it where the run requires every tool (CI)."""
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason} ({REQUIRE}=1: a test may not skip for a missing tool)", pytrace=False)
    pytest.skip(reason)


def command(name: str, why: str) -> str:
    """The path of the command ``name`` on PATH; ``why`` says what the test needs it for (and how to get it)."""
    found = shutil.which(name)
    if found is None:
        missing(f"{name} not installed: {why}")
    return found
