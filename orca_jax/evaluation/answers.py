"""Reading the answer out of a generation, per target form, and comparing it with the target.

A weak parser once scored an Orca model at 0.05% on BBH instead of 41.6%, so this module is part of
the metric. Each task has one target form, inferred from its targets (`infer_form`):

    form           targets (BBH task, AGIEval)            read from the generation
    choice         "(A)" .. "(R)"  (date_understanding)   an option letter: "(B)", "B)", "B", or an option's text
    yes_no         "Yes", "No"     (navigate)             yes / no
    true_false     "True", "False" (boolean_expressions)  true / false
    valid_invalid  "valid", "invalid" (formal_fallacies)  valid / invalid
    number         "42", "-17"     (object_counting)      a number: "1,673" and "12.0" read as 1673 and 12
    letter         "A" .. "J"      (AGIEval)              an option letter or an option's text
    free           anything else   (word_sorting)         the text itself, case, spacing and ", " aside

Where the answer is, for every form but the option forms:
  1. after the last closing phrase ("So the answer is yes.", "Answer: yes", "the final answer is 42"),
     up to the end of its sentence or line;
  2. otherwise, when the whole generation is short (at most `SHORT_ANSWER_WORDS` words, what an
     answer-only student writes: "Yes.", "1673", "There are six."), the whole generation; for `free`
     (word_sorting's sorted words, a title) the whole generation whatever its length.
For `choice` (BBH's options) the same, with three more readings:
  0. first, a generation that is all one option's text, whatever its length ("The quail is the
     rightmost"), unless it is an option letter ("B.");
  1. after the closing phrase, "(B)", "B", "option B" or an option's text; an option's text that holds
     a sentence end ("Yeah. Let's get rid of the trams and build carriages instead.") is looked for at
     the start of the rest of the line;
  1b. otherwise an option declared right: "Option (A) is correct because ...", "(C) is the right answer";
  2. otherwise a generation that is an option letter and exactly that option's text ("(B) He's a
     terrible person, trying to ...") or, when short, the whole generation.
A long generation with no closing phrase is otherwise unparsed: guessing from its middle would
credit a model for listing options. A candidate naming two different answers ("(A) or (B)") is
unparsed too. Numbers may be written as words ("six", "twenty-one"). "A" and "I" followed by a word
are the article and the pronoun ("So the answer is A New Hope"), not option letters.

`letter` is AGIEval's: its zero-shot prompt ends "Among A through E, the answer is", so the reply
continues that sentence, and AGIEval scores the first capital letter of the reply. `letter` reads, in
order: a reply that is all one option's text (" Civic Park is north of the service area."); an
option letter the reply starts with (" (B).", " B", " B) because ...", " B. <its text>"); the
closing phrase and a declared option as for `choice` (" not obvious. Let's think step by step. (A)
is out. So the answer is (C)."); else AGIEval's own rule, the first capital letter that is one of
the options' letters, so "The answer is B" reads B, not T.

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
LINE_END = re.compile(r"\n")
# A reply that starts with an option letter: "(B)", "B)", "B.", "B:", "B," or "B" then a space or the end.
LEADING_LETTER = re.compile(r"\s*(?:\(([A-R])\)|([A-R])([.):,;]|\s|$))")
BARE_OPTION_LETTER = re.compile(r"(?:^|\b(?:option|choice)\s+)([A-R])(?:[.):,]|\s+(\w)?|$)")
BARE_LETTER = re.compile(r"\s*\(?([A-R])\)?[.:]?\s*")
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
    if form in ("choice", "letter"):
        return _option(generation, options, form)
    candidate = _after_closing_phrase(generation)
    if candidate is None:
        words = generation.split()
        if not words or (len(words) > SHORT_ANSWER_WORDS and form != "free"):
            return None
        candidate = generation
    return _read(candidate.strip(), form, options)


def is_correct(answer: str | None, target: str, form: str) -> bool:
    return answer is not None and answer == normalize_target(target, form)


def _after_closing_phrase(generation: str, whole_line: bool = False) -> str | None:
    """What follows the last closing phrase, up to the end of its sentence (or of its line)."""
    matches = list(CLOSING_PHRASE.finditer(generation))
    if not matches:
        return None
    rest = generation[matches[-1].end() :]
    end = (LINE_END if whole_line else SENTENCE_END).search(rest)  # a period before a digit (3.14) ends none
    return rest[: end.start()] if end else rest


def _option(generation: str, options: dict[str, str], form: str) -> str | None:
    """The option letter a `choice` or `letter` generation names (see the module docstring)."""
    agieval = form == "letter"
    bare = BARE_LETTER.fullmatch(generation)
    if not (bare and bare[1] in options) and (named := option_named(generation, options)):
        return named  # the whole reply is one option's text: "The quail is the rightmost"
    if agieval and (lead := _leading_letter(generation, options)):
        return lead  # " (B) because ...", the rest of "Among A through E, the answer is"
    if (candidate := _after_closing_phrase(generation)) is not None:
        # An option text holding a sentence end ("Yeah. Let's get rid of the trams ...") is looked for
        # at the start of the rest of the line, which the sentence's end cut short.
        split = {letter: body for letter, body in options.items() if SENTENCE_END.search(body.strip())}
        answer = _choice(candidate, options) or _option_text_first(_after_closing_phrase(generation, True), split)
        if answer or not agieval:
            return answer
    if declared := DECLARED_OPTION.findall(generation):
        answer = _choice(" ".join(declared), options)  # two different options declared right: unparsed
        if answer or not agieval:
            return answer
    if agieval:
        return _first_capital_option(generation, options)
    if lead := _leading_letter(generation, options, own_text_only=True):
        return lead  # "(B) He's a terrible person, trying to ..."
    words = generation.split()
    return _choice(generation.strip(), options) if words and len(words) <= SHORT_ANSWER_WORDS else None


def _leading_letter(text: str, options: dict[str, str], own_text_only: bool = False) -> str | None:
    """The option letter a reply starts with ("(B)", "B)", "B.", "B:", "B" then a word), or None.
    "A" and "I" followed by a word are the article and the pronoun. With `own_text_only`, only a
    letter followed by nothing or by exactly its own option's text counts ("(B) Tuesday")."""
    match = LEADING_LETTER.match(text)
    if not match or (letter := match.group(1) or match.group(2)) not in (set(options) or set("ABCDE")):
        return None
    rest = text[match.end() :]
    if own_text_only:
        return letter if not rest.strip(" .") or _free(rest) == _free(options.get(letter, "")) else None
    if match.group(3) and match.group(3).isspace() and rest.strip() and letter in "AI":
        return None
    return letter


def _option_text_first(text: str, options: dict[str, str]) -> str | None:
    """The option whose text `text` starts with (the longest, if one text starts another), or None."""
    text = _free(text)
    starts = [
        (len(_free(body)), letter) for letter, body in options.items() if _free(body) and _starts(text, _free(body))
    ]
    if not starts:
        return None
    longest = max(n for n, _ in starts)
    found = {letter for n, letter in starts if n == longest}
    return found.pop() if len(found) == 1 else None


def _starts(text: str, prefix: str) -> bool:
    return text.startswith(prefix) and (len(text) == len(prefix) or not text[len(prefix)].isalnum())


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
    if not letters:  # "B)", "B.", "B" standing alone, "option B"; not the article in "A New Hope"
        letters = {
            letter
            for letter, word in BARE_OPTION_LETTER.findall(candidate.strip())
            if not (word and letter in "AI") and (letter in options or not options)
        }
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
    """Text compared case, spacing and commas between words aside ("apple, banana" is "apple banana"),
    without quotes, emphasis or a final period around it."""
    text, before = " ".join(text.replace(", ", " ").split()), None
    while text != before:  # 'Law".' and '"Law."' both read Law
        before, text = text, text.strip("\"'`* ").rstrip(".")
    return text.lower()
