"""Extract mode on a real small index: verbatim quotes, their spans, citations, abstention, and
the ways to choose the mode (setting, per-call override, stream, ask_many, chat); and the part of a
sentence that is quoted (rag.spans)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import IngestReport, ingest
from ingest.loaders.files import load
from rag import RAG, Answer
from rag.answer import Citation
from rag.config import Settings
from rag.errors import ConfigError
from rag.extract import extract_answer
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
from rag.sentences import split_sentences
from rag.spans import answer_span, terms

ATTENTION = "attention_is_all_you_need_neurips2017.pdf"
SPEECH = "state_of_the_union.txt"
README = "llama2c_README.md"
# (question, file, pages, words the quoted sentence must hold)
KNOWN = [
    ("What does the Transformer use instead of recurrence?", ATTENTION, {2}, ("attention",)),
    ("How many identical layers does the Transformer's encoder stack have?", ATTENTION, {2, 3},
     ("6",)),
    ("How many parallel attention heads does the Transformer employ?", ATTENTION, {5}, ("8",)),
    ("How much is Ford investing to build electric vehicles?", SPEECH, {None}, ("$11 billion",)),
    ("How many lines of C does llama2.c use for inference?", README, {None}, ("700",)),
]  # fmt: skip
OTHER_TOPICS = [
    "What is the capital of Australia?",
    "How do I bake sourdough bread at home?",
    "Which football club won the 1998 World Cup final?",
]


@pytest.fixture(scope="module")
def rag(built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder) -> RAG:
    extract = settings.model_copy(update={"answer_mode": "extract"})
    return RAG.open(built_index[0], extract, embedder=embedder)


@pytest.fixture(scope="module")
def page_texts(small_corpus: Path) -> dict[tuple[str, int | None], str]:
    """The text of every page (or whole text file) as the loaders give it to chunking."""
    texts: dict[tuple[str, int | None], str] = {}
    for name in (ATTENTION, SPEECH, README):
        path = small_corpus / name
        loaded = load(path, path.read_bytes())
        for page in loaded.pages:
            texts[(name, page.number)] = page.text
    return texts


def _check_quotes(answer: Answer, page_texts: dict[tuple[str, int | None], str]) -> None:
    """Every quote is its passage's exact substring at its offsets, and its page's too."""
    assert answer.mode == "extract"
    by_n = {p.n: p for p in answer.passages}
    assert {c.n for c in answer.citations} == {q.n for q in answer.quotes}
    for q in answer.quotes:
        passage = by_n[q.n]
        assert passage.text[q.start : q.end] == q.text
        assert q.text and q.text == q.text.strip()
        assert (q.source, q.page) == (passage.source, passage.page)
        assert (q.doc_start, q.doc_end) == (passage.start + q.start, passage.start + q.end)
        page = page_texts[(Path(q.source).name, q.page)]
        assert page[q.doc_start : q.doc_end] == q.text


def test_sentences_keep_exact_spans_through_pdf_text() -> None:
    text = (
        "Figure 1: The architecture.\nThe encoder maps an input of 3.5 tokens, as Smith et\n"
        "al. (2019) showed in Fig. 3 (e.g. Table 2). Dr. Jones said no.\n3.2 Attention\n"
        "An attention function maps a query to an output.\n\nSteps:\n- first, embed the text\n"
        "- second, search the index\n1. rank the passages\nSee No. 5 for details. It ends here! "
        "Made by Zhu et al. Purification followed."
    )
    got = split_sentences(text)
    for s in got:
        assert text[s.start : s.end] == s.text
    assert [s.text for s in got] == [
        "Figure 1: The architecture.",
        "The encoder maps an input of 3.5 tokens, as Smith et\nal. (2019) showed in Fig. 3 "
        "(e.g. Table 2).",
        "Dr. Jones said no.",
        "3.2 Attention",
        "An attention function maps a query to an output.",
        "Steps:",
        "- first, embed the text",
        "- second, search the index",
        "1. rank the passages",
        "See No. 5 for details.",
        "It ends here!",
        "Made by Zhu et al.",
        "Purification followed.",
    ]


def test_quotes_are_verbatim_with_spans_on_every_answer(
    rag: RAG, page_texts: dict[tuple[str, int | None], str]
) -> None:
    questions = (
        [q for q, *_ in KNOWN]
        + OTHER_TOPICS
        + [
            "What did the president say about Ukraine?",
            "What is multi-head attention?",
            "How do I compile run.c?",
            "What is BLEU?",
            "Why self-attention?",
        ]
    )
    answered = 0
    for question in questions:
        answer = rag.ask(question)
        _check_quotes(answer, page_texts)
        answered += not answer.abstained
        assert 1 <= len(answer.quotes) <= 3 or answer.abstained
    assert answered >= len(KNOWN)


@pytest.mark.parametrize(("question", "name", "pages", "words"), KNOWN)
def test_citations_point_at_the_right_file_and_page(
    rag: RAG, question: str, name: str, pages: set[int | None], words: tuple[str, ...]
) -> None:
    answer = rag.ask(question)
    assert not answer.abstained, answer.passages[0].text if answer.passages else answer
    best = answer.quotes[0]
    assert Path(best.source).name == name and best.page in pages, answer.quotes
    assert all(w.lower() in best.text.lower() for w in words), best.text
    assert answer.model.startswith("extract:") and answer.usage.completion_tokens == 0


@pytest.mark.parametrize("question", OTHER_TOPICS)
def test_abstains_on_other_topics(rag: RAG, question: str) -> None:
    answer = rag.ask(question)
    assert answer.abstained and not answer.quotes and not answer.citations
    assert answer.mode == "extract"


def test_abstains_on_a_retrieved_paragraph_that_does_not_answer(rag: RAG) -> None:
    """Passages of the paper about training and its cost are retrieved, strongly enough to pass
    the passage rule, but none gives a price: the sentence threshold abstains."""
    question = "How many US dollars did the electricity for training the Transformer cost?"
    answer = rag.ask(question)
    assert Path(answer.passages[0].source).name == ATTENTION
    assert max(p.similarity or 0.0 for p in answer.passages) >= (rag.settings.abstain_below or 0)
    assert answer.abstained, answer.quotes
    # Without the sentence threshold the same passages give a quote.
    assert not rag.ask(question, extract_min_score=-1.0).abstained


def test_per_call_override_and_no_model_loaded(
    built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder
) -> None:
    rag = RAG.open(built_index[0], settings, embedder=embedder)
    assert settings.resolved_answer_mode == "generate"
    answer = rag.ask(KNOWN[0][0], answer_mode="extract")
    assert answer.mode == "extract" and answer.quotes
    stream = rag.stream(KNOWN[0][0], answer_mode="extract")
    assert list(stream) == [answer.answer]
    assert stream.answer is not None and stream.answer.quotes == answer.quotes
    many = rag.ask_many([KNOWN[0][0], OTHER_TOPICS[0]], answer_mode="extract")
    assert [a.abstained for a in many if isinstance(a, Answer)] == [False, True]
    chat = rag.chat(answer_mode="extract")
    assert chat.send("Answer in one sentence from now on.").mode == "extract"
    first = chat.send("How many identical layers does the encoder have?")
    follow = chat.send("And the decoder?")
    assert first.mode == follow.mode == "extract" and follow.quotes
    assert rag._backend is None  # no language model was loaded for any of it
    with pytest.raises(ConfigError, match="answer_mode"):
        rag.ask(KNOWN[0][0], answer_mode="quote")


def test_extract_mode_reads_the_larger_of_top_k_and_extract_top_k(rag: RAG) -> None:
    """No prompt bounds extraction, so it reads extract_top_k passages (the default, measured on
    COVID-QA and SciFact), or top_k when that is larger; generate mode keeps top_k."""
    question = KNOWN[0][0]
    settings = rag.settings
    assert settings.extract_top_k > settings.top_k
    answer = rag.ask(question)
    assert [p.n for p in answer.passages] == list(range(1, settings.extract_top_k + 1))
    assert len(rag.ask(question, extract_top_k=2).passages) == settings.top_k
    assert len(rag.ask(question, top_k=12).passages) == 12
    assert len(rag.ask(question, extract_top_k=6).passages) == 6
    # The first passages are the ones top_k alone retrieves: extraction only reads further.
    first = [(p.source, p.start) for p in rag.retrieve(question)]
    assert [(p.source, p.start) for p in answer.passages[: len(first)]] == first
    with pytest.raises(ConfigError, match="extract_top_k"):
        rag.ask(question, extract_top_k=0)


def test_answer_mode_setting_resolves_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.model_validate({}).resolved_answer_mode == "extract"  # no served model
    assert Settings.model_validate({"answer_mode": "generate"}).resolved_answer_mode == "generate"
    served = Settings.model_validate({"llm_url": "http://127.0.0.1:8000/v1"})
    assert served.resolved_answer_mode == "generate"
    monkeypatch.setenv("RAG_ANSWER_MODE", "extract")
    assert Settings.load().answer_mode == "extract"


# (question, sentence, the part quoted)
SPANS = [
    # A leading run that restates the question is left out ...
    ("Who performed the sampling procedures?",
     "All sampling procedures were performed by veterinarians, with approval from the committee.",
     "veterinarians, with approval from the committee."),
    # ... and a trailing one.
    ("What is the most common cause of viral gastroenteritis in children?",
     "Rotavirus infection is the most common cause of viral gastroenteritis in children.",
     "Rotavirus infection"),
    # Signs that cling to a word stay with it.
    ("How much is Ford investing to build electric vehicles?",
     "Ford is investing $11 billion to build electric vehicles.",
     "$11 billion"),
    # Both; a bracket the quote opens is closed.
    ("What do common HCoV species cause in adults and children?",
     "Common HCoV species cause influenza-like illness (ILI) in adults and children.",
     "influenza-like illness (ILI)"),
    # One question word at an edge is not enough to leave a run out.
    ("Who wrote the report?",
     "Wrote in 2019 by Smith and colleagues at the institute.",
     "Wrote in 2019 by Smith and colleagues at the institute."),
    # A sentence that only restates the question is quoted whole.
    ("Are vaccines effective against measles?",
     "Vaccines are effective against measles.",
     "Vaccines are effective against measles."),
]  # fmt: skip


@pytest.mark.parametrize(("question", "sentence", "quoted"), SPANS)
def test_answer_span_is_an_exact_part_of_the_sentence(
    question: str, sentence: str, quoted: str
) -> None:
    start, end = answer_span(terms(question), sentence)
    assert sentence[start:end] == quoted
    assert answer_span(terms(question), sentence, None) == (0, len(sentence))


class _WordEmbedder:
    """Vectors of letter counts: enough to rank sentences, no model to load."""

    name = "letters"

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[float(t.lower().count(c)) + 0.01 for c in "abcdefghijklmnopqrstuvwxyz"]
                for t in texts]  # fmt: skip


def test_trimmed_quote_keeps_exact_offsets_and_its_citation() -> None:
    text = (
        "Sampling took place in 2018.\nAll sampling procedures were performed by\nveterinarians "
        "of the institute (WIV).  Bats were released afterwards."
    )
    # The passage as it sits in its document: after 1,000 characters of other text.
    document = "Field notes. " * 76 + "Bats. " + text + " Nothing else follows."
    start = document.index(text)
    passage = Citation(n=2, source="bats.txt", page=None, start=start, end=start + len(text),
                       text=text, score=1.0, similarity=0.9, chunk_id=7)  # fmt: skip
    answer = extract_answer(
        "Who performed the sampling procedures?",
        [passage],
        _WordEmbedder(),
        abstain_phrase="none",
        abstain_below=0.35,
        min_score=None,
        model="extract:letters",
    )
    assert not answer.abstained and len(answer.quotes) == 1
    q = answer.quotes[0]
    assert q.text == "veterinarians of the institute (WIV)."
    assert text[q.start : q.end] == q.text
    assert document[q.doc_start : q.doc_end] == q.text
    assert (q.n, q.source, q.page) == (2, "bats.txt", None)
    assert answer.citations == [passage]
    assert answer.answer == "veterinarians of the institute (WIV). [2]"


# Short factual documents in five languages, one index. The sentences the answers must come from
# open with capitals outside ASCII (Über, Её, Ωστόσο) or follow 。！？ with no space.
MULTILINGUAL = {
    "zugspitze.de.txt": (
        "Die Zugspitze ist mit 2962 Metern der höchste Berg Deutschlands. Sie liegt im "
        "Wettersteingebirge an der Grenze zu Österreich. Über 500.000 Menschen besuchen den Gipfel "
        "jedes Jahr. Die erste dokumentierte Besteigung gelang dem Vermessungsoffizier Josef Naus "
        "im Jahr 1820. Äußerst beliebt ist die Fahrt mit der Bayerischen Zugspitzbahn, einer "
        "Zahnradbahn, die seit 1930 auf den Berg führt.\n"
    ),
    "baikal.ru.txt": (
        "Байкал — озеро тектонического происхождения в южной части Восточной Сибири. Это самое "
        "глубокое озеро на планете: его наибольшая глубина составляет 1642 метра. В Байкале "
        "содержится около 20 % мировых запасов пресной озёрной воды. Летом вода прогревается "
        "слабо. Её температура у поверхности летом редко превышает 15 градусов. В 1996 году "
        "озеро Байкал было включено в список объектов всемирного наследия ЮНЕСКО.\n"
    ),
    "olympus.el.txt": (
        "Ο Όλυμπος είναι το ψηλότερο βουνό της Ελλάδας. Βρίσκεται στα σύνορα της Θεσσαλίας με τη "
        "Μακεδονία. Η ψηλότερη κορυφή του, ο Μύτικας, έχει υψόμετρο 2918 μέτρα. Ωστόσο η πρώτη "
        "καταγεγραμμένη ανάβαση στην κορυφή έγινε μόλις το 1913. Την κορυφή κατέκτησαν ο Χρήστος "
        "Κάκκαλος, ο Φρεντερίκ Μπουασονά και ο Ντανιέλ Μπο-Μποβί. Το 1938 ο Όλυμπος έγινε ο "
        "πρώτος εθνικός δρυμός της χώρας.\n"
    ),
    "everest.zh.txt": (
        "珠穆朗玛峰是世界上海拔最高的山峰，位于中国与尼泊尔的边界上。根据2020年的测量，珠穆朗玛峰的"
        "海拔高度为8848.86米。1953年5月29日，埃德蒙·希拉里和丹增·诺尔盖首次登上了珠穆朗玛峰的顶峰。"
        "这是人类登山历史上的伟大壮举！此后每年春季都有数百名登山者尝试攀登这座山峰。为什么这么多人想"
        "要登顶？因为它是世界第一高峰。\n"
    ),
    "everest.en.txt": (
        "Mount Everest is the highest mountain on Earth above sea level. It lies on the border "
        "between Nepal and China. In 2020 a joint survey measured its height as 8,848.86 metres. "
        "Edmund Hillary and Tenzing Norgay made the first ascent on 29 May 1953.\n"
    ),
}
# (question, file, the sentence the quote must lie in, a word the quote must hold)
MULTILINGUAL_KNOWN = [
    ("Wann gelang die erste Besteigung der Zugspitze?", "zugspitze.de.txt",
     "Die erste dokumentierte Besteigung gelang dem Vermessungsoffizier Josef Naus im Jahr 1820.",
     "1820"),
    ("Wie viele Menschen besuchen den Gipfel der Zugspitze jedes Jahr?", "zugspitze.de.txt",
     "Über 500.000 Menschen besuchen den Gipfel jedes Jahr.", "500.000"),
    ("Какова наибольшая глубина озера Байкал?", "baikal.ru.txt",
     "Это самое глубокое озеро на планете: его наибольшая глубина составляет 1642 метра.",
     "1642"),
    ("Какова температура воды у поверхности Байкала летом?", "baikal.ru.txt",
     "Её температура у поверхности летом редко превышает 15 градусов.", "15"),
    ("В каком году Байкал включили в список всемирного наследия ЮНЕСКО?", "baikal.ru.txt",
     "В 1996 году озеро Байкал было включено в список объектов всемирного наследия ЮНЕСКО.",
     "1996"),
    ("Πότε έγινε η πρώτη ανάβαση στην κορυφή του Ολύμπου;", "olympus.el.txt",
     "Ωστόσο η πρώτη καταγεγραμμένη ανάβαση στην κορυφή έγινε μόλις το 1913.", "1913"),
    ("Πόσο υψόμετρο έχει ο Μύτικας;", "olympus.el.txt",
     "Η ψηλότερη κορυφή του, ο Μύτικας, έχει υψόμετρο 2918 μέτρα.", "2918"),
    ("珠穆朗玛峰的海拔高度是多少？", "everest.zh.txt",
     "根据2020年的测量，珠穆朗玛峰的海拔高度为8848.86米。", "8848.86"),
    ("谁首次登上了珠穆朗玛峰？", "everest.zh.txt",
     "1953年5月29日，埃德蒙·希拉里和丹增·诺尔盖首次登上了珠穆朗玛峰的顶峰。", "希拉里"),
    ("Who made the first ascent of Mount Everest?", "everest.en.txt",
     "Edmund Hillary and Tenzing Norgay made the first ascent on 29 May 1953.", "Hillary"),
]  # fmt: skip
MULTILINGUAL_OTHER_TOPICS = [
    "Wie backe ich zu Hause ein Sauerteigbrot?",
    "Кто написал роман «Война и мир»?",
    "Ποια ομάδα κέρδισε το Παγκόσμιο Κύπελλο του 1998;",
    "如何在家里烤面包？",
]


@pytest.fixture(scope="module")
def multilingual(
    tmp_path_factory: pytest.TempPathFactory,
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
) -> RAG:
    """An index of MULTILINGUAL in extract mode. The embedder (all-MiniLM-L6-v2) is English-only;
    each document is one chunk and extract mode reads extract_top_k (10) passages, so every
    passage is read whatever the retrieval mode, and the default (hybrid) is kept: what is tested
    is the choice of the sentence."""
    corpus = tmp_path_factory.mktemp("multilingual")
    for name, text in MULTILINGUAL.items():
        (corpus / name).write_text(text, encoding="utf-8")
    index = tmp_path_factory.mktemp("multilingual-index") / "idx"
    ingest([corpus], index, settings, embedder=embedder, tokenizer=tokenizer)
    extract = settings.model_copy(update={"answer_mode": "extract"})
    return RAG.open(index, extract, embedder=embedder)


@pytest.mark.parametrize(
    ("question", "name", "sentence", "word"),
    MULTILINGUAL_KNOWN,
    ids=[f"{k[1].split('.')[1]}-{i}" for i, k in enumerate(MULTILINGUAL_KNOWN)],
)
def test_extract_quotes_the_answering_sentence_in_every_script(
    multilingual: RAG, question: str, name: str, sentence: str, word: str
) -> None:
    answer = multilingual.ask(question, answer_mode="extract")
    assert not answer.abstained, [p.text[:40] for p in answer.passages]
    best = answer.quotes[0]
    assert Path(best.source).name == name, answer.quotes
    assert best.text in sentence and word in best.text, best.text
    passage = next(p for p in answer.passages if p.n == best.n)
    assert passage.text[best.start : best.end] == best.text
    assert MULTILINGUAL[name][best.doc_start : best.doc_end] == best.text
    assert best.score >= (multilingual.settings.extract_min_score or 0.0)


@pytest.mark.parametrize("question", MULTILINGUAL_OTHER_TOPICS, ids=["de", "ru", "el", "zh"])
def test_extract_abstains_on_other_topics_in_every_script(multilingual: RAG, question: str) -> None:
    answer = multilingual.ask(question, answer_mode="extract")
    assert answer.abstained, answer.quotes
