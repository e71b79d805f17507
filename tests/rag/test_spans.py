"""Content words and quoted parts in any script (rag.spans): Unicode words, CJK bigrams, and the
one stopword list that extract mode shares with lexical search."""

from __future__ import annotations

import pytest

from rag.index.lexical import query_words
from rag.spans import answer_span, stem, terms


def test_terms_of_spaced_scripts_are_their_words_lower_cased() -> None:
    # Question words and the commonest function words are stopwords in German, Russian and Greek
    # as in English; German words that are English words too ("die") are not.
    assert terms("Какова наибольшая глубина озера Байкал?") == {
        "наибольшая", "глубина", "озера", "байкал",
    }  # fmt: skip
    assert terms("Wann gelang die erste Besteigung der Zugspitze?") == {
        "gelang", "die", "erste", "besteigung", "zugspitze",
    }  # fmt: skip
    assert terms("Πότε έγινε η πρώτη ανάβαση;") == {"έγινε", "πρώτη", "ανάβαση"}
    # Greek capitals lower-case to a final sigma at a word's end, so "ΟΛΥΜΠΟΣ" meets "Ολυμπος".
    assert terms("ΟΛΥΜΠΟΣ Ολυμπος") == {"ολυμπος"}


def test_stemming_leaves_other_scripts_whole() -> None:
    """The plural rule is an English one: Greek and Cyrillic words keep their last letters."""
    assert stem("vaccines") == "vaccine"
    assert terms("Όλυμπος голос Кавказ") == {"όλυμπος", "голос", "кавказ"}


def test_cjk_terms_are_character_bigrams() -> None:
    assert terms("谁首次登上了珠穆朗玛峰？") == {
        "谁首", "首次", "次登", "登上", "上了", "了珠", "珠穆", "穆朗", "朗玛", "玛峰",
    }  # fmt: skip
    assert terms("山。") == {"山"}  # a lone character is its own term
    assert terms("GPT-4在2023年发布") == {"gpt", "4", "在", "2023", "年发", "发布"}


def test_extract_and_lexical_search_share_one_stopword_list() -> None:
    """A word lexical search ignores in a question is no content word for extract mode either."""
    for question in (
        "What did she find herself just now at the lake?",
        "Why do they blame themselves and not ours?",
        "How many layers does the encoder have?",
    ):
        assert terms(question) == {stem(w) for w in query_words(question)}


# (question, sentence, the part quoted)
SPANS = [
    # A leading run of the question's words is left out in Cyrillic as in English ...
    ("Кто впервые поднялся на Эльбрус?",
     "На Эльбрус впервые поднялся Хиллар Хаширов в 1829 году.",
     "Хиллар Хаширов в 1829 году."),
    # ... and a trailing one in Greek.
    ("Ποιο βουνό είναι το ψηλότερο της Ελλάδας;",
     "Ο Όλυμπος είναι το ψηλότερο βουνό της Ελλάδας.",
     "Ο Όλυμπος"),
    # In Chinese a character restates the question when a bigram of the question holds it; the
    # particle 为 ("is") at the edge of the run goes with it, as a stopword would.
    ("珠穆朗玛峰的海拔高度是多少？",
     "根据2020年的测量，珠穆朗玛峰的海拔高度为8848.86米。",
     "根据2020年的测量，珠穆朗玛峰的海拔高度为8848.86米。"),
    ("珠穆朗玛峰的海拔高度是多少？",
     "珠穆朗玛峰的海拔高度为8848.86米。",
     "8848.86米。"),
    # One question character is not enough to leave a run out.
    ("谁首次登上了珠穆朗玛峰？",
     "1953年5月29日，埃德蒙·希拉里和丹增·诺尔盖首次登上了珠穆朗玛峰的顶峰。",
     "1953年5月29日，埃德蒙·希拉里和丹增·诺尔盖首次登上了珠穆朗玛峰的顶峰。"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("question", "sentence", "quoted"), SPANS, ids=["ru", "el", "zh-inner", "zh-lead", "zh-whole"]
)
def test_answer_span_in_other_scripts(question: str, sentence: str, quoted: str) -> None:
    start, end = answer_span(terms(question), sentence)
    assert sentence[start:end] == quoted
