"""Shared fixtures: the built-in policy and a sanitizing context with a fixed key and clock."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from schemas.policy import load_policy  # noqa: E402

TEST_KEY = b"test-key-0123456789abcdef-0123456789"
AS_OF = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.fixture(scope="session")
def policy():
    return load_policy()


@pytest.fixture(scope="session")
def ctx(policy):
    from transforms.records import SanitizeContext

    return SanitizeContext(policy=policy, key=TEST_KEY, as_of=AS_OF)
