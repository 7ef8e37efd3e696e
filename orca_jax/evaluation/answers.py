"""Reading the final answer out of a generated explanation, and comparing it with the target.

An explanation ends with a closing phrase such as `So the answer is 1673.`; the answer is what
follows the last such phrase, up to the end of its sentence or line. The eval issue widens this to
every BIG-Bench-Hard and AGIEval target form.
"""

from __future__ import annotations

import re

CLOSING_PHRASE = re.compile(
    r"(?:so|therefore|thus|hence)?,?\s*the (?:final )?answer is\s*:?\s*(.+?)(?:\.\s|\.$|\n|$)", re.IGNORECASE
)


def extract_answer(text: str) -> str | None:
    """The answer after the last closing phrase, normalized; None when there is none."""
    matches = CLOSING_PHRASE.findall(text)
    if not matches:
        return None
    answer = normalize(matches[-1])
    return answer or None


def normalize(answer: str) -> str:
    """Case, surrounding space, quotes, trailing period and thousands separators do not count."""
    answer = answer.strip().strip("\"'`*").strip().rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", answer):
        answer = answer.replace(",", "")
    return answer.lower()


def is_correct(generation: str, target: str) -> bool:
    answer = extract_answer(generation)
    return answer is not None and answer == normalize(target)
