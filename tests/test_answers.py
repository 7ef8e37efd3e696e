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


# Long option texts as BBH writes them (snarks, logical_deduction, movie_recommendation).
LONG = {
    "A": "The quail is the second from the left",
    "B": "Yeah. Let's get rid of the trams and build carriages instead.",
    "C": "I love it when people mock other people for trying",
    "D": "Star Wars Episode IV - A New Hope",
}


@pytest.mark.parametrize(
    "generation, answer",
    [
        ("The quail is the second from the left", "A"),  # the text alone, longer than a short answer
        ("(A) The quail is the second from the left", "A"),  # the letter and exactly its text
        ("(D) Star Wars Episode IV - A New Hope.", "D"),
        ("(A) The quail is wrong here, (C) is what the question wants, I think", None),  # not A's text
        ("So the answer is Yeah. Let's get rid of the trams and build carriages instead.", "B"),  # a text's period
        ("So the answer is I love it when people mock other people for trying.", "C"),  # "I" is no letter
        ("So the answer is A New Hope.", None),  # "A" is the article, and no option is "A New Hope"
        ("So the answer is (A) The quail is the second from the left.", "A"),
        ("Answer: (C)", "C"),
    ],
)
def test_choice_with_long_option_texts(generation, answer):
    assert extract(generation, "choice", LONG) == answer


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
        ("free", "apple, banana, cherry", "apple banana cherry"),  # word_sorting's words listed with commas
        ("free", "So the answer is apple, banana, cherry.", "apple banana cherry"),
        ("free", "apple\nbanana\ncherry", "apple banana cherry"),  # one per line
        ("free", '"Monsters, Inc".', "monsters inc"),  # quotes and a period around the text
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


# AGIEval options as the real files hold them: logiqa-en's letters as option texts, long texts.
AGI = {"A": "C", "B": "G", "C": "A careful analysis of a traditional practice", "D": "Civic Park is north of the area"}


@pytest.mark.parametrize(
    "reply, answer",
    [
        (" Civic Park is north of the area.", "D"),  # the option's text, not its first capital (C)
        (" A careful analysis of a traditional practice", "C"),  # "A" is the article
        (" G.", "B"),  # G is no option letter here, but option B's text
        (" C", "C"),  # C is an option letter: the letter, not option A's text "C"
        (" (D) Civic Park is north of the area.", "D"),
        (" B) because the passage says so.", "B"),
        (" not obvious. Let's think step by step. Option (A) does not fit. So the answer is (D).", "D"),
        (" D. Civic Park is north, so the answer is not (A).", "D"),  # the reply's start is the answer
        (" Option (B) is correct because the passage says so.", "B"),
        (" A careful reading rules out the others. So the answer is B.", "B"),
    ],
)
def test_agieval_reply_continuing_the_prompt(reply, answer):
    assert extract(reply, "letter", AGI) == answer


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
