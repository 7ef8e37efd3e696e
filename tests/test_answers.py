"""Answer extraction: the closing phrase, normalization, and what does not count as an answer."""

import pytest

from orca_jax.evaluation.answers import extract_answer, is_correct


@pytest.mark.parametrize(
    "generation, answer",
    [
        ("7+6=13, write 3 carry 1. Write the last carry 1. So the answer is 1673.", "1673"),
        ("So the answer is 1673", "1673"),
        ("so the answer is 1,673.", "1673"),
        ("Therefore, the answer is (B).", "(b)"),
        ("The final answer is: 42.\nThanks!", "42"),
        ("So the answer is 12. Wait, so the answer is 13.", "13"),
        ('So the answer is "Yes".', "yes"),
        ("So the answer is 3.14.", "3.14"),
    ],
)
def test_extracts_the_last_closing_phrase(generation, answer):
    assert extract_answer(generation) == answer


@pytest.mark.parametrize("generation", ["", "1673", "The sum is 1673.", "So the answer is .", "answer: 5"])
def test_no_closing_phrase_means_no_answer(generation):
    assert extract_answer(generation) is None


def test_is_correct_is_exact_after_normalization():
    assert is_correct("So the answer is 1673.", "1673")
    assert not is_correct("So the answer is 1672.", "1673")
    assert not is_correct("So the answer is 16730.", "1673")
    assert not is_correct("1673", "1673")  # an answer without its closing phrase is not parsed
