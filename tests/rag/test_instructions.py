"""Standing instructions told apart from questions, on hand-labelled chat messages."""

from __future__ import annotations

import json
from pathlib import Path

from rag.instructions import is_instruction

MESSAGES = json.loads(
    (Path(__file__).parent / "instruction_messages.json").read_text(encoding="utf-8")
)


def test_labelled_messages_are_told_apart() -> None:
    """Every hand-labelled message in instruction_messages.json (half instructions) is classified."""
    instructions, questions = MESSAGES["instructions"], MESSAGES["questions"]
    assert len(instructions) >= 20 and len(questions) >= 20
    missed = [m for m in instructions if not is_instruction(m)]
    taken = [m for m in questions if is_instruction(m)]
    assert missed == [] and taken == [], f"instructions missed: {missed}; questions taken: {taken}"
