"""Scoring two answers with a judge model, as Vicuna's evaluation and Orca's first table did.

The judge reads the question and two answers and gives each an overall score from 1 to 10, first
line first ("8 6"). Orca reports the student's total as a share of the reference's (ChatGPT's);
judges favour a position, so every prompt is judged twice, with the answers swapped:

    student_first      Assistant 1 = the student, Assistant 2 = the reference
    reference_first    Assistant 1 = the reference, Assistant 2 = the student

Per prompt set (`summarize`): the mean student and reference scores over every parsed judgment,
their ratio (sum of student scores / sum of reference scores: Orca's "relative score"), the
position bias (the mean advantage of whichever answer came first, over prompts judged in both
orders: 0 for a judge that ignores order; it cancels out of the two orders' mean, which is why
both are asked), how many judge replies could not be read, and how many requests failed every retry.

The judging prompts are Vicuna's (lm-sys/vicuna-blog-eval, eval/table/prompt.jsonl, Apache-2.0):
one for general questions, one for coding and one for math, chosen by the prompt's category, at
the judge settings Vicuna used (temperature 0.2, 1,024 tokens). Their wording is kept as
published, because a score means something only next to scores asked the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ORDERS = ("student_first", "reference_first")
JUDGE_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
JUDGE_TEMPLATE = (
    "[Question]\n{question}\n\n[The Start of Assistant 1's Answer]\n{answer_1}\n\n[The End of Assistant 1's Answer]"
    "\n\n[The Start of Assistant 2's Answer]\n{answer_2}\n\n[The End of Assistant 2's Answer]\n\n[System]\n{prompt}\n\n"
)
JUDGE_PROMPTS = {
    "general": (
        "We would like to request your feedback on the performance of two AI assistants in response to the user "
        "question displayed above.\nPlease rate the helpfulness, relevance, accuracy, level of details of their "
        "responses. Each assistant receives an overall score on a scale of 1 to 10, where a higher score indicates "
        "better overall performance.\nPlease first output a single line containing only two values indicating the "
        "scores for Assistant 1 and 2, respectively. The two scores are separated by a space. In the subsequent "
        "line, please provide a comprehensive explanation of your evaluation, avoiding any potential bias and "
        "ensuring that the order in which the responses were presented does not affect your judgment."
    ),
    "coding": (
        "Your task is to evaluate the coding abilities of the above two assistants. They have been asked to implement "
        "a program to solve a given problem. Please review their code submissions, paying close attention to their "
        "problem-solving approach, code structure, readability, and the inclusion of helpful comments.\n\nPlease "
        "ensure that the assistants' submissions:\n\n1. Correctly implement the given problem statement.\n2. Contain "
        "accurate and efficient code.\n3. Include clear and concise comments that explain the code's logic and "
        "functionality.\n4. Adhere to proper coding standards and best practices.\n\nOnce you have carefully "
        "reviewed both submissions, provide detailed feedback on their strengths and weaknesses, along with any "
        "suggestions for improvement. You should first output a single line containing two scores on the scale of "
        "1-10 (1: no code/no sense; 10: perfect) for Assistant 1 and 2, respectively. Then give extra comments "
        "starting from the next line."
    ),
    "math": (
        "We would like to request your feedback on the mathematical proficiency of two AI assistants regarding the "
        "given user question displayed above.\nFirst, please solve the problem independently, without referring to "
        "the answers provided by Assistant 1 and Assistant 2.\nAfterward, please examine the problem-solving process "
        "of Assistant 1 and Assistant 2 step-by-step to ensure their correctness, identifying any incorrect steps if "
        "present. Your evaluation should take into account not only the answer but also the problem-solving steps."
        "\nFinally, please output a Python tuple containing two numerical scores for Assistant 1 and Assistant 2, "
        "ranging from 1 to 10, respectively. If applicable, explain the reasons for any variations in their scores "
        "and determine which assistant performed better."
    ),
}
JUDGE_TEMPERATURE = 0.2
JUDGE_MAX_TOKENS = 1024

_NUMBER = r"(10(?:\.0+)?|\d(?:\.\d+)?)"
_SCORE_LINE = re.compile(rf"\s*\**\s*{_NUMBER}\s*(?:,\s*|\s+|/10\s*,?\s*){_NUMBER}(?:/10)?\s*\**\s*")
_SCORE_TUPLE = re.compile(rf"\(\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\)")


def judge_request(kind: str, question: str, answer_1: str, answer_2: str) -> dict:
    """The judge's messages for one order, as a query for teacher_client.Teacher.ask."""
    prompt = JUDGE_TEMPLATE.format(question=question, answer_1=answer_1, answer_2=answer_2, prompt=JUDGE_PROMPTS[kind])
    return {"system_prompt": JUDGE_SYSTEM, "question": prompt}


def parse_scores(text: str) -> tuple[float, float] | None:
    """(Assistant 1's score, Assistant 2's) from a judge's reply, or None when it gives none.

    Vicuna asks for the two scores alone on the first line ("8 6", "8, 6", "8/10 6/10"); the math
    prompt asks for a Python tuple, which judges write last ("(9, 4)"). Scores run from 1 to 10."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    match = _SCORE_LINE.fullmatch(lines[0]) if lines else None
    if match is None:
        tuples = _SCORE_TUPLE.findall(text)
        match_groups = tuples[-1] if tuples else None
    else:
        match_groups = match.groups()
    if match_groups is None:
        return None
    first, second = (float(x) for x in match_groups)
    return (first, second) if 1 <= first <= 10 and 1 <= second <= 10 else None


def student_and_reference(order: str, scores: Sequence[float]) -> tuple[float, float]:
    """(student's score, reference's score) from a judgment's (Assistant 1, Assistant 2) scores."""
    return (scores[0], scores[1]) if order == "student_first" else (scores[1], scores[0])


def summarize(judgments: Sequence[dict]) -> dict[str, float]:
    """Metrics of one prompt set from its judgments: {order: {"scores": [a1, a2] | None, ...}} per prompt."""
    student, reference, first_advantage = [], [], []
    unparsed = failed = 0
    for judgment in judgments:
        advantages = []
        for order in ORDERS:
            scores = judgment[order].get("scores")
            if scores is None:
                failed += judgment[order].get("reason") == "failed"  # no reply at all, after every retry
                unparsed += judgment[order].get("reason") != "failed"
                continue
            s, r = student_and_reference(order, scores)
            student.append(s)
            reference.append(r)
            advantages.append(scores[0] - scores[1])
        if len(advantages) == len(ORDERS):
            first_advantage.append(sum(advantages) / len(ORDERS))
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {
        "prompts": float(len(judgments)),
        "judgments": float(len(student)),
        "unparsed": float(unparsed),
        "failed": float(failed),
        "student_score": mean(student),
        "reference_score": mean(reference),
        "ratio": sum(student) / sum(reference) if reference else float("nan"),
        "position_bias": mean(first_advantage),
    }
