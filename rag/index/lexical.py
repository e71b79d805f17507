"""Lexical (BM25) search: the question's search words, and the tantivy postings of a segment.

Every segment holds a tantivy index (``lexical/``) of its chunks: one ``text`` field with the
chunk text and its heading (document title and section), stemmed with tantivy's ``en_stem``, and
the chunk id, document id and page as fast fields. Tantivy answers a disjunction of terms with
block-max WAND, so a question made of common words does not score every chunk that holds one of
them (benchmarks/lexical_engines.py: 1.2 / 3.3 ms p50 / p95 over 1M chunks, against 91 / 232 ms
for SQLite FTS5).

BM25 statistics are those of the whole index, not of one segment: a segment's own document
frequencies would score a term found in 1 of a 5-chunk segment's chunks as common. Each term's
query is boosted by (global idf / segment idf), so that every segment scores with the idf of the
whole index, as Lucene's searcher does over its segments. The length normalisation stays per
segment (its average chunk length), which differs little between segments of one corpus.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# Words too common to help ranking; dropping them keeps OR queries fast on large indexes. They are
# dropped from questions only (postings keep every word: en_stem has no stopword filter), so the
# list can change without reindexing. Extract mode's content words (rag.spans) leave out the same
# words. Beside English: the commonest function words and the question words of German, Russian
# and Greek, which would otherwise count as content words that no answer holds; German words that
# are English words too ("die", "war", "den", "mit", "hat") are left out.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves

    auch auf bei das dem der ein eine einem einen einer eines für ist nach nicht oder sich sind über
    und viele wann warum welche welchem welchen welcher welches wer wie wird wo wurde wurden zu zum
    zur

    а без бы был была были было быть в во вы где да для до его её если есть ещё же за и из или
    их к как какая каким какие каков какова каково каковы каких каком какое какой какую когда кто
    ли на над не но о об он она они оно от по под при с со сколько так то у уже что чем это я

    από για γιατί δεν είναι έχει έχουν ένα ένας η ήταν θα και με μια να ο οι πού πόσα πόσες πόση
    πόσο πόσοι ποια ποιες ποιο ποιοι ποιον ποιος πότε που πώς σε στα στη στην στις στο στον στους
    τα την της τη τις το τον του τους των""".split()  # noqa: SIM905
)
_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)

LEXICAL_DIR = "lexical"
_HEAP = 64_000_000  # tantivy writer memory; past it a segment is written in several parts


def query_words(text: str) -> list[str]:
    """The question's distinct content words (all its words when every one is a stopword)."""
    words: list[str] = []
    for w in _TOKEN_RE.findall(text.lower()):
        if w not in STOPWORDS and w not in words:
            words.append(w)
    if not words:
        words = list(dict.fromkeys(_TOKEN_RE.findall(text.lower())))
    return words


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression (for indexes of schema 1-2): the question's words, OR-ed, each
    quoted, so that punctuation or FTS5 syntax in a question can never raise a syntax error.
    None when the question has no searchable word."""
    words = query_words(text)
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words)


def _tantivy() -> Any:
    import tantivy

    return tantivy


def _schema() -> Any:
    tantivy = _tantivy()
    sb = tantivy.SchemaBuilder()
    sb.add_integer_field("id", stored=False, indexed=False, fast=True)
    sb.add_integer_field("doc", stored=False, indexed=True, fast=True)
    sb.add_integer_field("page", stored=False, indexed=True, fast=True)
    sb.add_text_field("text", tokenizer_name="en_stem", index_option="freq")
    return sb.build()


def search_text(text: str, heading: str | None) -> str:
    """What the ``text`` field indexes: the chunk and its heading, so that a term's frequency and
    the length count both (FTS5's bm25() with weights 1, 1 on two columns did the same)."""
    return f"{text}\n{heading}" if heading else text


def write_lexical(path: Path, rows: Iterable[tuple[int, int, int | None, str, str | None]]) -> None:
    """Build the tantivy index of a segment from (chunk id, document id, page, text, heading)."""
    tantivy = _tantivy()
    path.mkdir(parents=True, exist_ok=True)
    index = tantivy.Index(_schema(), path=str(path))
    writer = index.writer(heap_size=_HEAP, num_threads=1)
    for chunk_id, doc_id, page, text, heading in rows:
        doc = tantivy.Document(id=chunk_id, doc=doc_id, text=search_text(text, heading))
        if page is not None:
            doc.add_integer("page", page)
        writer.add_document(doc)
    writer.commit()
    writer.wait_merging_threads()


def analyzer() -> Any:
    """Tantivy's ``en_stem`` chain, which the index applies to the ``text`` field."""
    tantivy = _tantivy()
    # The "en_stem" chain the index uses, so that question words are stemmed the same way.
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


_ANALYZER: Any = None


def query_terms(text: str) -> list[str]:
    """The indexed terms of a question's search words."""
    global _ANALYZER
    if _ANALYZER is None:
        _ANALYZER = analyzer()
    return list(dict.fromkeys(t for w in query_words(text) for t in _ANALYZER.analyze(w)))


def idf(doc_freq: int, docs: int) -> float:
    """BM25's idf, as tantivy and Lucene compute it."""
    return math.log(1.0 + (docs - doc_freq + 0.5) / (doc_freq + 0.5))


class LexicalSegment:
    """The tantivy postings of one segment, opened memory-mapped.

    The binding's ``Index.open`` starts a thread that polls the index's meta file (tantivy's
    reload watcher; no reload policy of the binding avoids it), and the thread and the memory
    maps last while the index or any searcher of it is referenced: :meth:`close` drops both.
    """

    def __init__(self, path: Path) -> None:
        tantivy = _tantivy()
        self.path = path
        self._index: Any = tantivy.Index.open(str(path))
        self._searcher: Any = self._index.searcher()
        self.docs = int(self._searcher.num_docs)

    def close(self) -> None:
        self._index = self._searcher = None

    def _open(self) -> Any:
        if self._searcher is None:
            raise ValueError(f"the postings in {self.path} are closed")
        return self._searcher

    def doc_freqs(self, terms: Sequence[str]) -> list[int]:
        searcher = self._open()
        return [int(searcher.doc_freq("text", t)) for t in terms]

    def search(
        self,
        terms: Sequence[str],
        boosts: Sequence[float],
        k: int,
        *,
        documents: Sequence[int] | None = None,
        pages: tuple[int, int] | None = None,
        deleted: Sequence[int] = (),
    ) -> list[tuple[int, float]]:
        """The ``k`` best (chunk id, score): an OR of ``terms``, each boosted, restricted to
        ``documents`` (None: all) and ``pages``, never in the ``deleted`` documents."""
        tantivy = _tantivy()
        searcher = self._open()
        schema, q = self._index.schema, tantivy.Query
        clauses = []
        for term, boost in zip(terms, boosts, strict=True):
            tq = q.term_query(schema, "text", term)
            clauses.append((tantivy.Occur.Should, tq if boost == 1.0 else q.boost_query(tq, boost)))
        if not clauses or k <= 0:
            return []
        query = q.boolean_query(clauses)
        must: list[Any] = []
        if documents is not None:
            if not documents:
                return []
            must.append((tantivy.Occur.Must, q.term_set_query(schema, "doc", list(documents))))
        if pages is not None:
            rng = q.range_query(schema, "page", tantivy.FieldType.Integer, pages[0], pages[1])
            must.append((tantivy.Occur.Must, rng))
        if deleted:
            must.append((tantivy.Occur.MustNot, q.term_set_query(schema, "doc", list(deleted))))
        if must:
            query = q.boolean_query([(tantivy.Occur.Must, query), *must])
        hits = searcher.search(query, limit=k, count=False).hits
        ids = searcher.fast_field_values("id", [a for _, a in hits])
        return [(int(i), float(s)) for i, (s, _) in zip(ids, hits, strict=True)]


def search_segments(
    segments: Sequence[tuple[LexicalSegment, dict[str, Any]]], text: str, k: int
) -> list[tuple[int, float]]:
    """The ``k`` best chunks over several segments, scored with the idf of all of them.

    Each element is a segment and the keyword arguments of its :meth:`LexicalSegment.search`
    (``documents``, ``pages``, ``deleted``); tombstoned chunks count in the statistics until a
    merge drops them, as in Lucene.
    """
    terms = query_terms(text)
    if not terms:
        return []
    freqs = [seg.doc_freqs(terms) for seg, _ in segments]
    total = sum(seg.docs for seg, _ in segments)
    overall = [sum(f[i] for f in freqs) for i in range(len(terms))]
    found: list[tuple[int, float]] = []
    for (seg, kwargs), f in zip(segments, freqs, strict=True):
        use = [i for i, n in enumerate(f) if n > 0]
        if not use:
            continue
        boosts = [
            1.0 if len(segments) == 1 else idf(overall[i], total) / idf(f[i], seg.docs) for i in use
        ]
        found += seg.search([terms[i] for i in use], boosts, k, **kwargs)
    found.sort(key=lambda h: (-h[1], h[0]))
    return found[:k]
