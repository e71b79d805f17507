from __future__ import annotations

from rag.citations import attribute, cited_numbers, is_abstention, strip_invalid


def test_cited_numbers_in_order_of_first_mention() -> None:
    assert cited_numbers("A [2]. B [1][2]. C [3, 4].") == [2, 1, 3, 4]
    assert cited_numbers("no marks") == []


def test_invalid_numbers_are_removed() -> None:
    assert strip_invalid("A [2]. B [9]. C [1, 9].", {1, 2}) == "A [2]. B. C [1]."


def test_abstention_phrase_and_variants() -> None:
    phrase = "I don't know based on the provided documents."
    assert is_abstention("I don’t know based on the provided documents.", phrase)
    assert is_abstention("I do not know.", phrase)
    assert not is_abstention("The encoder has 6 layers [1].", phrase)


def test_attribution_picks_the_supporting_passage() -> None:
    passages = [
        "The weather was sunny in Paris.",
        "The encoder is composed of a stack of N = 6 identical layers.",
    ]
    assert attribute("The encoder has a stack of 6 identical layers.", passages) == [2]
    assert attribute("Bananas are yellow.", passages) == []
