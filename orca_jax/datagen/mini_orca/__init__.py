"""Mini-Orca: a synthetic explanation-tuning set with programmatic teachers, small enough to train on a CPU.

Task families in the spirit of BIG-Bench-Hard, each with exact programmatic answers. Every question
is answered by three teachers, as Orca's student learns from GPT-4's explanations, ChatGPT's, or
(Vicuna-style) answers alone:

    strong        GPT-4-like: every step, ending in "So the answer is X." (X is exactly the target)
    intermediate  ChatGPT-like: the same method with steps skipped, and for a share
                  `intermediate_error_rate` of the questions one plausible slip carried to a
                  different final answer
    answer_only   shallow imitation: "So the answer is X." alone (the closing phrase is kept so that
                  every student is parsed alike; the students differ only in the explanation)

The strong teacher writes every step so that it follows from the few tokens before it and one item
of the question found by name: a 0.3M-parameter student cannot look far back by position or hold
an unwritten intermediate result, so a step it cannot compute locally is a step it cannot learn.
The study's three families (the defaults), with a worked example each (question; strong;
intermediate; its flawed form):

  addition               What is 478 + 718?                                    target "1196"
    478: 4c 7b 8a. 718: 7c 1b 8a. a: 8+8+0=16 -> 6. b: 7+1+1=9 -> 96. c: 4+7+0=11 -> 196.
      carry 1 -> 1196. So the answer is 1196.
    478: 4c 7b 8a. 718: 7c 1b 8a. a: 8+8+0=16. b: 7+1+1=9. c: 4+7+0=11. carry 1. So the answer is 1196.
    ... b: 7+1+0=8. c: 4+7+0=11. carry 1. So the answer is 1186.                 (a carry forgotten)
    Digits are named by column (a = units), so a column's digits are found by name; each line adds
    the carry the line before made and writes the answer so far, new digit first.
  boolean_expressions    not ( True and False ) or True is                     target "True"
    not ( True and False ) or True = not False or True = True or True = True. So the answer is True.
    not ( True and False ) or True = True or True = True. So the answer is True.  (every other rewrite)
    not ( True and False ) or True = True or True = False. So the answer is False.  (one value flipped)
  web_of_lies            Question: Ann lies. Bob says Ann tells the truth. Does Bob tell the truth?
    Ann lies. Bob says Ann tells the truth, so Bob lies. So the answer is No.          target "No"
    Ann lies, Bob lies. So the answer is No.                                       (claims not restated)
    Ann lies, Bob tells the truth. So the answer is Yes.                           (a claim misread)

Also available (`--families`): tracking_shuffled_objects (who holds which colour after numbered
swaps; the strong teacher restates everyone's colour after each swap). Every student stayed at
chance on it at the study's budget, so the study leaves it out (README, "The mini-Orca study").

Harder held-out variants are the largest questions of each family's training range (5-digit
numbers, 5 values, 5 people, 5 swaps): more steps of the same method, in rows of the trained length.
Held-out questions come from their own random streams and never repeat a training question. Each
record carries an Orca-style system message drawn from its family's Orca sub-collection (plus the
empty message, which the evaluation uses), in a short wording (`SHORT_BEHAVIOURS`).

`write_mini_orca(out_dir, ...)` writes (sizes per family; everything a function of the arguments):

    train_strong.jsonl, train_intermediate.jsonl, train_answer_only.jsonl
                        the same questions, ids (mini_orca.<family>.train.<i>) and system messages in
                        the same order, one teacher each; OpenOrca's columns
    heldout.jsonl       the in-distribution held-out questions with the strong teacher's responses
    bbh/<family>.json   the same held-out questions in BIG-Bench-Hard's format,
                        {"examples": [{"input": ..., "target": ...}, ...]}
    bbh_hard/<family>.json   the harder held-out questions, same format
    tokenizer.model     the student's SentencePiece vocabulary, fitted to the training text (tokenizer.py)
    manifest.json       the arguments, the teachers, and per family its sizes, answer form and errors
"""

from orca_jax.datagen.mini_orca.arithmetic import addition_question, explain_addition
from orca_jax.datagen.mini_orca.base import SHORT_BEHAVIOURS, SYSTEM_MESSAGES, Family, Problem, closing
from orca_jax.datagen.mini_orca.writer import DEFAULT_FAMILIES, FAMILIES, TEACHERS, stream, write_mini_orca

__all__ = ["DEFAULT_FAMILIES", "FAMILIES", "SHORT_BEHAVIOURS", "SYSTEM_MESSAGES", "TEACHERS", "Family", "Problem",
           "addition_question", "closing", "explain_addition", "stream", "write_mini_orca"]  # fmt: skip
