"""Reading the answer out of a generation, per target form, and comparing it with the target.

A weak parser once scored an Orca model at 0.05% on BBH instead of 41.6%, so this module is part of
the metric. Each task has one target form, inferred from its targets (`infer_form`):

    form           targets (BBH task, AGIEval)            read from the generation
    choice         "(A)" .. "(R)"  (date_understanding)   an option letter: "(B)", "B)", "B", or an option's text
    yes_no         "Yes", "No"     (navigate)             yes / no
    true_false     "True", "False" (boolean_expressions)  true / false
    valid_invalid  "valid", "invalid" (formal_fallacies)  valid / invalid
    number         "42", "-17"     (object_counting)      a number: "1,673" and "12.0" read as 1673 and 12
    letter         "A" .. "J"      (AGIEval)              the first capital option letter of the reply
    free           anything else   (word_sorting)         the text itself, case and spacing aside

Where the answer is, for every form but `letter`:
  1. after the last closing phrase ("So the answer is (B).", "Answer: yes", "the final answer is 42",
     "the correct option is B"), up to the end of its sentence or line;
  2. otherwise, for the option forms, an option declared right: "Option (A) is correct because ...",
     "(C) is the right answer";
  3. otherwise, when the whole generation is short (at most `SHORT_ANSWER_WORDS` words, what an
     answer-only student writes: "(B)", "Yes.", "1673", "There are six."), the whole generation;
     for `free` (word_sorting's sorted words, a title) the whole generation whatever its length.
A long generation with no closing phrase is otherwise unparsed: guessing from its middle would
credit a model for listing options. A candidate naming two different answers ("(A) or (B)") is
unparsed too. Numbers may be written as words ("six", "twenty-one").

AGIEval's zero-shot prompt ends "Among A through E, the answer is", so the reply starts where the
letter goes; AGIEval scores the first capital letter of the reply. `letter` takes the first capital
letter that is one of the options' letters, so "The answer is B" reads B, not T.

`extract(generation, form, options)` returns the normalized answer or None; `normalize_target`
puts a target in the same normal form; a generation is correct when the two are equal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

FORMS = ("choice", "yes_no", "true_false", "valid_invalid", "number", "letter", "free")
SHORT_ANSWER_WORDS = 6
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQR"

CLOSING_PHRASE = re.compile(
    r"(?:the\s+(?:final\s+|correct\s+|right\s+|best\s+)?(?:answer|option|choice)\s+(?:is|would\s+be|will\s+be)"
    r"|\banswer\s*:)\s*:?\s*",
    re.IGNORECASE,
)
SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
OPTION_LINE = re.compile(r"^\s*\(([A-R])\)\s*(.+?)\s*$", re.MULTILINE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
# "Option (A) is correct", "(C) is the right answer", "choice B is the best one".
DECLARED_OPTION = re.compile(
    r"(?:\b(?:option|choice|answer)\s+)?(\([A-Ra-r]\)|\b[A-R]\b)\s+is\s+(?:the\s+)?(?:correct|right|best)\b"
)
UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
NUMBER_WORD = re.compile(
    rf"\b(?:({'|'.join(TENS)})(?:[-\s]({'|'.join(UNITS[1:10])}))?|({'|'.join(UNITS)}))\b", re.IGNORECASE
)
WORDS = {
    "yes_no": ("yes", "no"),
    "true_false": ("true", "false"),
    "valid_invalid": ("valid", "invalid"),
}


def infer_form(targets: Sequence[str]) -> str:
    """The target form shared by all of a task's targets."""
    clean = [t.strip() for t in targets]

    def every(test) -> bool:
        return bool(clean) and all(test(t) for t in clean)

    if every(lambda t: re.fullmatch(r"\([A-R]\)", t)):
        return "choice"
    for form, words in WORDS.items():
        if every(lambda t, words=words: t.lower() in words):
            return form
    if every(lambda t: re.fullmatch(r"-?\d+(?:\.\d+)?", t)):
        return "number"
    if every(lambda t: re.fullmatch(r"[A-J]", t)):
        return "letter"
    return "free"


def options_in(text: str) -> dict[str, str]:
    """Option letter -> option text, from lines like "(B) Tuesday" (BBH's and AGIEval's layout)."""
    return {letter: body for letter, body in OPTION_LINE.findall(text)}


def normalize_target(target: str, form: str) -> str:
    target = target.strip()
    if form in ("choice", "letter"):
        return target.strip("()").upper()
    if form == "number":
        return _number(target) or target
    return _free(target) if form == "free" else target.lower()


def extract(generation: str, form: str, options: dict[str, str] | None = None) -> str | None:
    """The answer in `generation` in its normal form, or None when none can be read."""
    if form not in FORMS:
        raise ValueError(f"unknown answer form {form!r}; one of {FORMS}")
    options = options or {}
    if form == "letter":
        return _first_capital_option(generation, options)
    candidate = _after_closing_phrase(generation)
    if candidate is None and form == "choice" and (declared := DECLARED_OPTION.findall(generation)):
        candidate = " ".join(declared)  # two different options declared right read as unparsed
    if candidate is None:
        words = generation.split()
        if not words or (len(words) > SHORT_ANSWER_WORDS and form != "free"):
            return None
        candidate = generation
    return _read(candidate.strip(), form, options)


def is_correct(answer: str | None, target: str, form: str) -> bool:
    return answer is not None and answer == normalize_target(target, form)


def _after_closing_phrase(generation: str) -> str | None:
    matches = list(CLOSING_PHRASE.finditer(generation))
    if not matches:
        return None
    rest = generation[matches[-1].end() :]
    end = SENTENCE_END.search(rest)  # a period before a digit (3.14) ends no sentence
    return rest[: end.start()] if end else rest


def _read(candidate: str, form: str, options: dict[str, str]) -> str | None:
    if not candidate:
        return None
    if form == "choice":
        return _choice(candidate, options)
    if form == "number":
        numbers = {_number(n) for n in NUMBER.findall(candidate)} | _number_words(candidate)
        return numbers.pop() if len(numbers) == 1 else None
    if form == "free":
        return _free(candidate) or None
    found = {w for w in re.findall(r"[a-z]+", candidate.lower()) if w in WORDS[form]}
    return found.pop() if len(found) == 1 else None


def option_named(text: str, options: dict[str, str]) -> str | None:
    """The letter of the one option whose text `text` is (case, spacing and a final period aside)."""
    named = [letter for letter, body in options.items() if _free(body) == _free(text)]
    return named[0] if len(named) == 1 else None


def _choice(candidate: str, options: dict[str, str]) -> str | None:
    if named := option_named(candidate, options):  # the option's text instead of its letter: "... is Tuesday."
        return named
    letters = set(re.findall(r"\(([A-Ra-r])\)", candidate))  # "(B)" and "(b)"
    if not letters:  # "B)", "B.", "B" standing alone, "option B"
        letters = set(re.findall(r"(?:^|\b(?:option|choice)\s+)([A-R])(?:\)|\.|,|:|\s|$)", candidate.strip()))
    letters = {x.upper() for x in letters}
    if len(letters) == 1:
        return letters.pop()
    return None  # no letter, or two different ones


def _first_capital_option(reply: str, options: dict[str, str]) -> str | None:
    allowed = set(options) or set("ABCDE")
    for ch in reply:
        if ch.isupper() and ch in allowed:
            return ch
    return None


def _number_words(text: str) -> set[str]:
    """Numbers written as words, below a hundred: "six" -> "6", "twenty-one" -> "21"."""
    found = set()
    for tens, unit, alone in NUMBER_WORD.findall(text):
        if alone:
            found.add(str(UNITS.index(alone.lower())))
        else:
            found.add(str(TENS[tens.lower()] + (UNITS.index(unit.lower()) if unit else 0)))
    return found


def _number(text: str) -> str | None:
    text = text.replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def _free(text: str) -> str:
    text = " ".join(text.split()).strip().strip("\"'`*").strip()
    return text.rstrip(".").strip().lower()
