"""Answer extraction per target form: many phrasings of right answers, wrong ones, and unparseable ones."""

import pytest

from orca_jax.evaluation.answers import extract, infer_form, is_correct, normalize_target, options_in

OPTIONS = {"A": "Monday", "B": "Tuesday", "C": "a bird", "D": "12/01/2001"}


@pytest.mark.parametrize(
    "generation, answer",
    [
        ("Step 1 ... Step 3. So the answer is (B).", "B"),
        ("Therefore, the answer is B.", "B"),
        ("the answer is (b)", "B"),
        ("The correct option is (D) 12/01/2001.", "D"),
        ("So the final answer is: (A)", "A"),
        ("Answer: C", "C"),
        ("(B)", "B"),  # an answer-only student
        ("B)", "B"),
        ("So the answer is Tuesday.", "B"),  # the option's text
        ("So the answer is a bird.", "C"),  # "a" is an article here, not option A
        ("So the answer is (A). Wait, no: the answer is (C).", "C"),  # the last closing phrase counts
        ("The answer is (A) or (B).", None),  # two letters: ambiguous
        ("So the answer is Wednesday.", None),  # not an option
        ("Looking at (A) Monday and (B) Tuesday, both are weekdays, and the question is tricky.", None),  # no answer
        ("Option (A) is correct because Monday comes first in the week.", "A"),  # declared right, no closing phrase
        ("I think (C) is the right answer here, since birds fly.", "C"),
        ("Option (A) is correct, and option (B) is correct too, given the wording.", None),  # two declared
        ("", None),
    ],
)
def test_choice(generation, answer):
    assert extract(generation, "choice", OPTIONS) == answer


@pytest.mark.parametrize(
    "form, generation, answer",
    [
        ("yes_no", "The ball is red. So the answer is Yes.", "yes"),
        ("yes_no", "So the answer is no", "no"),
        ("yes_no", "No.", "no"),
        ("yes_no", 'So the answer is "yes".', "yes"),
        ("yes_no", "So the answer is yes and no.", None),
        ("yes_no", "So the answer is maybe.", None),
        ("true_false", "not ( True ) and True = False and True = False. So the answer is False.", "false"),
        ("true_false", "True", "true"),
        ("true_false", "The answer is true, I think.", "true"),
        ("valid_invalid", "The argument is deductively invalid. So the answer is invalid.", "invalid"),
        ("valid_invalid", "Answer: valid", "valid"),
        ("valid_invalid", "valid or invalid, hard to say", None),
        ("number", "7+6=13, write 3 carry 1. So the answer is 1673.", "1673"),
        ("number", "So the answer is 1,673.", "1673"),
        ("number", "So the answer is -17.", "-17"),
        ("number", "So the answer is 12.0.", "12"),
        ("number", "So the answer is 3.14.", "3.14"),
        ("number", "The final answer is 42\nThanks!", "42"),
        ("number", "So the answer is 12 or 13.", None),
        ("number", "So the answer is twelve.", "12"),
        ("number", "There are six instruments.", "6"),  # short, no closing phrase, a number word
        ("number", "So the answer is twenty-one.", "21"),
        ("number", "So the answer is 3, not one.", None),  # two different numbers
        ("number", "1673", "1673"),
        ("free", "Sorted: so the answer is apple banana cherry.", "apple banana cherry"),
        ("free", "So the answer is  ] ) }", "] ) }"),
        # Free text with no closing phrase is read whole (word_sorting's reply of sorted words alone).
        ("free", "apple banana cherry date elderberry fig grape", "apple banana cherry date elderberry fig grape"),
    ],
)
def test_closed_and_open_forms(form, generation, answer):
    assert extract(generation, form) == answer


@pytest.mark.parametrize(
    "reply, answer",
    [
        (" (C)", "C"),
        (" C. Because the passage says so.", "C"),
        (" The answer is B", "B"),  # "T" is no option letter
        (" I think D is right.", "D"),  # "I" is no option letter
        (" none of them", None),
    ],
)
def test_agieval_first_capital_option_letter(reply, answer):
    assert extract(reply, "letter", {x: "" for x in "ABCD"}) == answer


def test_targets_and_correctness():
    assert normalize_target("(B)", "choice") == "B" and normalize_target("Yes", "yes_no") == "yes"
    assert normalize_target("12", "number") == "12" and normalize_target("C", "letter") == "C"
    assert is_correct("B", "(B)", "choice") and not is_correct("A", "(B)", "choice")
    assert not is_correct(None, "(B)", "choice")
    assert is_correct(extract("So the answer is 1673.", "number"), "1673", "number")
    assert not is_correct(extract("So the answer is 16730.", "number"), "1673", "number")
    assert is_correct(extract("So the answer is Apple  Banana.", "free"), "apple banana", "free")


@pytest.mark.parametrize(
    "targets, form",
    [
        (["(A)", "(R)"], "choice"),
        (["Yes", "no"], "yes_no"),
        (["True", "False"], "true_false"),
        (["valid", "invalid"], "valid_invalid"),
        (["12", "-3"], "number"),
        (["A", "E"], "letter"),
        (["apple banana", "(A)"], "free"),
    ],
)
def test_form_is_inferred_from_a_tasks_targets(targets, form):
    assert infer_form(targets) == form


def test_options_are_read_from_the_input():
    text = "Which day?\nOptions:\n(A) Monday\n(B) Tuesday\n"
    assert options_in(text) == {"A": "Monday", "B": "Tuesday"}
