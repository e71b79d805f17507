"""The Llama 2-chat prompt format, rendered from role messages as text and as token ids.

This is the format of Meta's reference ``chat_completion`` (llama/generation.py): a system prompt is
folded into the first user turn inside ``<<SYS>>`` tags, and every turn is encoded on its own with
BOS in front; a completed turn (question and answer) also gets EOS::

    <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST]

It is used by the completions API path (``llm_api = "completions"``), where the prompt is rendered
here and sent as plain text, so the server must not apply a chat template of its own as well. The
text of every message is neutralised first (:func:`rag.llm.prompt_safety.neutralise`): the server parses
``<s>`` and ``</s>`` in the text as BOS and EOS, so a passage must not be able to write them, nor
``[INST]`` or ``<<SYS>>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from langchain_core.messages import BaseMessage

from rag.llm.prompt_safety import neutralise

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
BOS, EOS = "<s>", "</s>"
BOS_ID, EOS_ID = 1, 2

Message = Mapping[str, str] | BaseMessage
_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
_ROLES_BY_TYPE = {"system": "system", "human": "user", "ai": "assistant"}


@dataclass(frozen=True)
class Turn:
    """One encoded unit of the dialogue: BOS + ``text`` (+ EOS when the turn has an answer)."""

    text: str
    closed: bool  # True: a question with its answer, which ends with EOS


def _role_and_content(message: Message) -> tuple[str, str]:
    if isinstance(message, BaseMessage):
        role = _ROLES_BY_TYPE.get(message.type)
        content = message.content
    else:
        role = _ROLES.get(message["role"])
        content = message["content"]
    if role is None:
        kind = message.type if isinstance(message, BaseMessage) else message["role"]
        raise ValueError(f"Llama 2-chat has no role for a {kind!r} message")
    # Only the markers added below may open or close a turn.
    return role, neutralise(str(content))


def turns(messages: Sequence[Message]) -> list[Turn]:
    """The dialogue as Llama 2-chat turns, exactly as Meta's reference code builds them.

    ``messages``: an optional system message, then user and assistant messages alternating, ending
    with a user message.
    """
    dialog = [_role_and_content(m) for m in messages]
    if dialog and dialog[0][0] == "system":
        if len(dialog) < 2:
            raise ValueError("a system message must be followed by a user message")
        system = dialog[0][1]
        dialog = [("user", B_SYS + system + E_SYS + dialog[1][1]), *dialog[2:]]
    roles = [role for role, _ in dialog]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(dialog))]
    if not dialog or roles != expected or roles[-1] != "user":
        raise ValueError(
            "Llama 2-chat needs user and assistant messages alternating, starting and ending with "
            f"a user message (after an optional system message); got {roles}"
        )
    out = [
        Turn(f"{B_INST} {q.strip()} {E_INST} {a.strip()} ", closed=True)
        for (_, q), (_, a) in zip(dialog[:-1:2], dialog[1::2], strict=True)
    ]
    out.append(Turn(f"{B_INST} {dialog[-1][1].strip()} {E_INST}", closed=False))
    return out


def render(messages: Sequence[Message]) -> str:
    """The prompt as text, with ``<s>`` and ``</s>`` written out where BOS and EOS go.

    Send it with the tokenizer's special tokens parsed from the text and none added (vLLM:
    ``add_special_tokens: false``); it then encodes to :func:`token_ids`.
    """
    return "".join(f"{BOS}{t.text}{EOS if t.closed else ''}" for t in turns(messages))


def token_ids(
    messages: Sequence[Message],
    encode: Callable[[str], list[int]],
    *,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> list[int]:
    """The prompt as token ids: each turn encoded on its own by ``encode`` (plain SentencePiece
    encoding, no special tokens), with BOS before every turn and EOS after every answered one."""
    ids: list[int] = []
    for t in turns(messages):
        ids += [bos_id, *encode(t.text)]
        if t.closed:
            ids.append(eos_id)
    return ids


__all__ = [
    "BOS",
    "B_INST",
    "B_SYS",
    "EOS",
    "E_INST",
    "E_SYS",
    "Turn",
    "render",
    "token_ids",
    "turns",
]
