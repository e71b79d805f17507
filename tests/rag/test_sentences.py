"""Sentences in any script (rag.sentences): where they end, how their words are counted, and the
exact spans that quotes rely on."""

from __future__ import annotations

import pytest

from rag.sentences import split_sentences

# (language, passage, its sentences): each sentence after the first opens with a capital outside
# ASCII (Ü, Ä, Е, Ω, Η) or follows 。！？ with no space; abbreviations and initials end none.
SPLITS = [
    ("German",
     "Die Zugspitze ist mit 2962 Metern der höchste Berg Deutschlands. Über 500.000 Menschen "
     "besuchen den Gipfel jedes Jahr. Äußerst beliebt ist die Zahnradbahn, vgl. Abb. 2, die "
     "z. B. Dr. Müller bzw. Prof. Öztürk nahmen. Österreich liegt im Süden.",
     ["Die Zugspitze ist mit 2962 Metern der höchste Berg Deutschlands.",
      "Über 500.000 Menschen besuchen den Gipfel jedes Jahr.",
      "Äußerst beliebt ist die Zahnradbahn, vgl. Abb. 2, die z. B. Dr. Müller bzw. Prof. Öztürk "
      "nahmen.",
      "Österreich liegt im Süden."]),
    ("Russian",
     "Байкал содержит около 20 % мировых запасов пресной воды. Её температура у поверхности "
     "редко превышает 15 градусов. Озеро изучали многие учёные, напр. В. И. Вернадский (см. "
     "Рис. 2), Л. С. Берг и т.д. Затем пришли туристы.",
     ["Байкал содержит около 20 % мировых запасов пресной воды.",
      "Её температура у поверхности редко превышает 15 градусов.",
      "Озеро изучали многие учёные, напр. В. И. Вернадский (см. Рис. 2), Л. С. Берг и т.д.",
      "Затем пришли туристы."]),
    ("Greek",
     "Ο Όλυμπος είναι το ψηλότερο βουνό της Ελλάδας. Ωστόσο η πρώτη καταγεγραμμένη ανάβαση "
     "έγινε μόλις το 1913. Την κορυφή κατέκτησε πρώτος ο Χ. Κάκκαλος μαζί με δύο Ελβετούς. Η "
     "κορυφή Μύτικας φτάνει τα 2918 μέτρα!",
     ["Ο Όλυμπος είναι το ψηλότερο βουνό της Ελλάδας.",
      "Ωστόσο η πρώτη καταγεγραμμένη ανάβαση έγινε μόλις το 1913.",
      "Την κορυφή κατέκτησε πρώτος ο Χ. Κάκκαλος μαζί με δύο Ελβετούς.",
      "Η κορυφή Μύτικας φτάνει τα 2918 μέτρα!"]),
    ("Chinese",
     "根据2020年的测量，珠穆朗玛峰的海拔高度为8848.86米。这是人类历史上的伟大壮举！为什么这么多人"
     "想要登顶？因为它是世界第一高峰。他说：“山峰很高！”随后他们下山了。",
     ["根据2020年的测量，珠穆朗玛峰的海拔高度为8848.86米。",
      "这是人类历史上的伟大壮举！",
      "为什么这么多人想要登顶？",
      "因为它是世界第一高峰。",
      "他说：“山峰很高！”",
      "随后他们下山了。"]),
]  # fmt: skip


@pytest.mark.parametrize(("language", "text", "expected"), SPLITS, ids=[s[0] for s in SPLITS])
def test_sentences_end_in_every_script(language: str, text: str, expected: list[str]) -> None:
    got = split_sentences(text)
    assert [s.text for s in got] == expected
    assert all(text[s.start : s.end] == s.text for s in got)


# (sentence, words): letter runs of two or more letters in spaced scripts; CJK runs count one word
# per two characters (rounded up), about the length of a Chinese word.
WORDS = [
    ("The encoder maps an input of 3.5 tokens, as Smith et al. showed.", 12),
    ("Её температура у поверхности редко превышает 15 градусов.", 6),
    ("Ωστόσο η πρώτη καταγεγραμμένη ανάβαση έγινε μόλις το 1913.", 7),
    ("Über 500.000 Menschen besuchen den Gipfel jedes Jahr.", 7),
    ("为什么这么多人想要登顶？", 6),
    ("1953年5月29日，埃德蒙·希拉里和丹增·诺尔盖首次登上了珠穆朗玛峰的顶峰。", 16),
    ("東京は日本の首都です。", 5),
]


@pytest.mark.parametrize(
    ("sentence", "words"),
    WORDS,
    ids=["English", "Russian", "Greek", "German", "Chinese", "Chinese-dates", "Japanese"],
)
def test_words_are_counted_in_every_script(sentence: str, words: int) -> None:
    (s,) = split_sentences(sentence)
    assert s.words == words


def test_crlf_paragraph_breaks_end_sentences() -> None:
    text = "Results\r\n\r\nThe model was trained for 3 days\r\n\r\nit converged early."
    got = split_sentences(text)
    assert [s.text for s in got] == [
        "Results",
        "The model was trained for 3 days",
        "it converged early.",
    ]
    assert all(text[s.start : s.end] == s.text for s in got)
    # The same text with LF breaks splits the same way.
    assert [s.text for s in split_sentences(text.replace("\r\n", "\n"))] == [s.text for s in got]


def test_chunks_and_sentences_strip_whitespace_with_one_function() -> None:
    """Chunk and sentence spans must leave out the same whitespace (any Unicode space, CR too),
    so both take it from one definition."""
    from ingest import chunking
    from rag import sentences

    assert chunking.strip_span is sentences.strip_span
    text = "\u3000\r\n Über.\u00a0\r\n"
    assert sentences.strip_span(text, 0, len(text)) == (4, 9)
