from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import ConfigError


def test_defaults_are_offline() -> None:
    s = Settings.model_validate({})
    assert s.llm_url is None
    assert s.embedder == "sentence-transformers/all-MiniLM-L6-v2"
    assert s.chunk_overlap < s.chunk_tokens


def test_precedence_defaults_toml_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "rag.toml"
    cfg.write_text("[rag]\ntop_k = 7\ntemperature = 0.5\nmax_tokens = 99\n")
    monkeypatch.setenv("RAG_TEMPERATURE", "0.25")
    monkeypatch.setenv("RAG_MAX_TOKENS", "50")
    s = Settings.load(cfg, max_tokens=12, top_p=None)
    assert s.top_k == 7  # from the file
    assert s.temperature == 0.25  # environment beats the file
    assert s.max_tokens == 12  # explicit beats the environment
    assert s.top_p == 1.0  # None overrides are ignored


def test_rag_toml_in_cwd_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rag.toml").write_text("top_k = 9\n")
    monkeypatch.chdir(tmp_path)
    assert Settings.load().top_k == 9


def test_unknown_setting_names_the_known_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "rag.toml"
    cfg.write_text("topk = 3\n")
    with pytest.raises(ConfigError, match=r"Known settings: .*top_k"):
        Settings.load(cfg)


def test_invalid_values_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="chunk_overlap"):
        Settings.load(None, chunk_tokens=32, chunk_overlap=40)
    bad = tmp_path / "bad.toml"
    bad.write_text("top_k = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "missing.toml")


def test_every_field_is_described() -> None:
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    assert missing == []
