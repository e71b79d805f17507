"""Prompt templates, read from the packaged ``prompts/`` folder or a user's override folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rag.errors import ConfigError

_ABSTAIN_RE = re.compile(r'reply exactly:\s*"([^"]+)"', re.IGNORECASE)
FILES = ("system.txt", "qa.txt", "passage.txt")


@dataclass(frozen=True)
class PromptTemplates:
    system: str
    qa: str
    passage: str

    @property
    def abstain_phrase(self) -> str:
        """The sentence the system prompt tells the model to give when the passages lack the answer."""
        m = _ABSTAIN_RE.search(self.system)
        return m.group(1) if m else "I don't know based on the provided documents."

    def render_passage(self, n: int, title: str, text: str) -> str:
        return self.passage.format(n=n, title=title, text=text).strip()

    def render_question(self, passages: list[str], question: str) -> str:
        return self.qa.format(passages="\n\n".join(passages), question=question).strip()


def read_template(name: str, prompt_dir: Path | None = None) -> str:
    """One template file: from ``prompt_dir`` when it has it, else the packaged one."""
    override = Path(prompt_dir) / name if prompt_dir else None
    if override is not None and override.is_file():
        return override.read_text(encoding="utf-8")
    return resources.files("rag._prompts").joinpath(name).read_text(encoding="utf-8")


def load_templates(prompt_dir: Path | None = None) -> PromptTemplates:
    """Templates from ``prompt_dir`` where it has them, else the packaged ones."""
    texts = {name: read_template(name, prompt_dir) for name in FILES}
    t = PromptTemplates(
        system=texts["system.txt"].strip(), qa=texts["qa.txt"], passage=texts["passage.txt"]
    )
    try:
        t.render_passage(1, "t", "x")
        t.render_question(["p"], "q")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"Prompt templates in {prompt_dir or 'the package'} have an unknown placeholder "
            f"{exc}; qa.txt takes {{passages}} and {{question}}, passage.txt {{n}}, {{title}} "
            "and {text}."
        ) from exc
    return t
