"""A real Context (state store in tmp_path, fresh metrics, a running bus) whose Events are collected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sources_support import Collected, make_context


@pytest.fixture
def collected(tmp_path: Path) -> Iterator[Collected]:
    with make_context(tmp_path / "state") as found:
        yield found
