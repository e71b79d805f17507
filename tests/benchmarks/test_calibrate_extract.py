"""benchmarks/calibrate_extract.py's SciFact check reads rationale sentences from the zip right:
each rationale span is one whole sentence of the abstract as the annotators split it."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA

SCIFACT = SHARED_DATA / "scifact" / "scifact.zip"
_spec = importlib.util.spec_from_file_location(
    "calibrate_extract", REPO / "benchmarks" / "calibrate_extract.py"
)
assert _spec is not None and _spec.loader is not None
calibrate_extract = importlib.util.module_from_spec(_spec)
sys.modules["calibrate_extract"] = calibrate_extract  # dataclasses resolve their module
_spec.loader.exec_module(calibrate_extract)


@pytest.mark.skipif(not SCIFACT.exists(), reason="needs ../shared/data/scifact")
def test_scifact_rationales_are_whole_sentences_of_the_abstracts() -> None:
    data = calibrate_extract.load_scifact(SCIFACT)
    assert len(data.docs) == 5183
    assert len(data.claims) == len(data.rationales) == 693  # train + validation, with rationales
    # Nothing lost or added: the sentences hold the BEIR corpus's text (the same abstracts with
    # the sentences run together) character for character, whitespace aside.
    with gzip.open(SHARED_DATA / "scifact" / "derived_beir_style" / "corpus.jsonl.gz", "rt") as f:
        beir = {d["_id"]: d["text"] for d in map(json.loads, f)}
    for doc, (text, spans) in data.docs.items():
        joined = "".join(text[a:b] for a, b in spans)
        assert re.sub(r"\s", "", joined) == re.sub(r"\s", "", beir[doc]), doc
    for key, rationales in data.rationales.items():
        for doc, (a, b) in rationales:
            sentence = data.docs[doc][0][a:b]
            assert sentence and sentence == sentence.strip(), (key, doc)
            assert (a, b) in data.docs[doc][1]
    # Sentences with an apostrophe are quoted with double quotes in the repr, and still parsed.
    assert sum("'" in t for t, _ in data.docs.values()) > 100
