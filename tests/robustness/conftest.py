"""Fixtures of the robustness suite (the harness that runs and checks a case is in harness.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def garbage(data_dir: Path) -> bytes:
    """Bytes that are no record of any format here: a stretch of a real zip archive."""
    return (data_dir / "text/udhr2.zip").read_bytes()[100_000:100_600]
