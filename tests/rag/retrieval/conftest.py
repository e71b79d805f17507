"""Fixtures shared by the retrieval tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings.load reads ./rag.toml and RAG_* variables: none of the caller's may leak in."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("RAG_"):
            monkeypatch.delenv(key)
