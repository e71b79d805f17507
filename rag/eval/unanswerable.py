"""Unanswerable questions for a SQuAD-format evaluation, of two kinds.

- **Held out** (the hard case, built the SQuAD 2.0 way): some documents are deleted from a copy
  of the evaluation index, and their questions are asked of it. Retrieval still finds on-topic
  passages of the other documents, which do not hold the answer (another document may state the
  same fact; the share of such questions is small, and it counts against abstention recall).
- **Off topic** (the easy case): questions about other documents (the shared PDFs and texts:
  the Transformer and Llama 2 papers, llama.cpp, an essay, a speech), asked of the same index.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

# One document in HOLDOUT_EVERY (sorted by name) is deleted from the held-out index.
HOLDOUT_EVERY = 10

OFF_TOPIC_QUESTIONS = (
    "What does the Transformer use instead of recurrence?",
    "How many attention heads does the base Transformer model use?",
    "What BLEU score did the big Transformer reach on WMT 2014 English-to-German?",
    "What optimizer was used to train the Transformer?",
    "What is the dimension of the keys in scaled dot-product attention?",
    "Why is the dot product scaled by the square root of the key dimension?",
    "What positional encoding does the Transformer use?",
    "How many GPUs were used to train the base Transformer models?",
    "What sizes of Llama 2 models were released?",
    "What is Llama 2-Chat optimized for?",
    "How many tokens was Llama 2 pretrained on?",
    "What context length does Llama 2 support?",
    "What is reinforcement learning with human feedback used for in Llama 2?",
    "Which quantization formats does llama.cpp support?",
    "Which hardware backends can llama.cpp run on?",
    "How do you convert a model to GGUF format?",
    "What does llama2.c implement in a single C file?",
    "How large is the smallest model trained on TinyStories in llama2.c?",
    "What did Paul Graham work on before college?",
    "Which programming language did Paul Graham write his first programs in?",
    "What was Viaweb and who bought it?",
    "Why did Paul Graham start Y Combinator?",
    "What painting school did Paul Graham attend?",
    "What did the president say about Ukraine in the State of the Union?",
    "What did the president propose to lower the cost of prescription drugs?",
    "Who did the president nominate to the Supreme Court?",
    "What is the plan to fight inflation in the State of the Union address?",
    "How many jobs were created last year according to the speech?",
    "What is the capital of Australia?",
    "How do I reset my router's password?",
)


def holdout_sources(sources: Sequence[str], fold: int = 0) -> list[str]:
    """The documents deleted from the held-out index: every HOLDOUT_EVERY-th by name, from the
    ``fold``-th on (folds 0 to HOLDOUT_EVERY - 1 hold every document out once)."""
    return sorted(sources)[fold::HOLDOUT_EVERY]


def heldout_index(index: Path, sources: Sequence[str]) -> Path:
    """A copy of ``index`` without ``sources``, made once beside it and kept.

    The copy is built by deleting documents (tombstones in one commit), so that the remaining
    documents keep the chunks and vectors of the full index.
    """
    from rag.index.documents import delete_documents

    key = hashlib.sha256("\n".join(sorted(sources)).encode()).hexdigest()[:8]
    target = index.with_name(f"{index.name}-without-{key}")
    if target.exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(index, partial)
    # Sources are names like "123#p0"; escape glob characters so each matches itself only.
    removed, _ = delete_documents(partial, [_literal_glob(s) for s in sources])
    if len(removed) != len(set(sources)):
        raise RuntimeError(
            f"Held-out index: deleted {len(removed)} of {len(set(sources))} documents from "
            f"{partial}; delete that directory and run the evaluation again."
        )
    partial.rename(target)
    return target


def _literal_glob(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)
