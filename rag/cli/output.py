"""What the commands show: JSON, sources with their pages, paths relative to the working directory."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def print_sources(answer: Any) -> None:
    if answer.abstained:
        print("\n(The documents do not answer this. Nearest passages:)")
        shown = answer.passages
    else:
        note = " (attributed by overlap; the model cited none)" if answer.citations_inferred else ""
        print(f"\nSources{note}:")
        shown = answer.citations or answer.passages
    for c in shown:
        label = (
            f" (page label {c.page_label})" if c.page_label and c.page_label != str(c.page) else ""
        )
        snippet = " ".join(c.text.split())[:160]
        where = f" > {c.section}" if c.section and c.page is None else ""
        # The cosine, in every mode: BM25 and fused scores mean nothing out of their ranking.
        similarity = f"  similarity {c.similarity:.3f}" if c.similarity is not None else ""
        print(f"  [{c.n}] {display_path(c.source)}{page_suffix(c.page)}{label}{where}{similarity}")
        if c.also_in:
            copies = "; ".join(f"{display_path(a.source)}{page_suffix(a.page)}" for a in c.also_in)
            print(f"      also in: {copies}")
        print(f"      {snippet}{'...' if len(c.text) > 160 else ''}")


def print_quotes(answer: Any) -> None:
    """An extractive answer: each quoted sentence, then where it stands (passage, file, page and
    characters of the page text); an abstention prints its sentence."""
    if not answer.quotes:
        print(answer.answer)
        return
    for q in answer.quotes:
        print(f'"{" ".join(q.text.split())}"')
        where = f"{display_path(q.source)}{page_suffix(q.page)}"
        print(f"    [{q.n}] {where}, characters {q.doc_start}-{q.doc_end}")


def page_suffix(page: int | None) -> str:
    return f", page {page}" if page is not None else ""


def display_path(source: str) -> str:
    try:
        return os.path.relpath(source)
    except ValueError:
        return source
