"""Mini-Orca: a synthetic explanation-tuning set with programmatic teachers, small enough to train on a CPU.

Six task families in the spirit of BIG-Bench-Hard, each with exact programmatic answers (plus the
original 3-digit `addition`, optional). Every question is answered by three teachers, as Orca's
student learns from GPT-4's explanations, ChatGPT's, or (Vicuna-style) answers alone:

    strong        GPT-4-like: every step, ending in "So the answer is X." (X is exactly the target)
    intermediate  ChatGPT-like: skips steps, and for a share `intermediate_error_rate` of the questions
                  makes one plausible slip that it carries to a different final answer
    answer_only   shallow imitation: "So the answer is X." alone (the closing phrase is kept so that
                  every student is parsed alike; the students differ only in the explanation)

A worked example of each family (question; strong; intermediate, then its flawed form):

  multistep_arithmetic   ((9 + 4) - (6 + -3)) =                                 target "10"
    9 + 4 = 13. 6 + -3 = 3. 13 - 3 = 10. So the answer is 10.
    13 - 3 = 10. So the answer is 10.
    13 - 9 = 4. So the answer is 4.                                (a bracket's sign flipped)
  boolean_expressions    not ( True and False ) or True is                     target "True"
    True and False = False. not False = True. True or True = True. So the answer is True.
    True or True = True. So the answer is True.
    False or False = False. So the answer is False.               (both sides misjudged)
  tracking_shuffled_objects                                                    target "(B)"
    Hal has lime, Ivy has navy, Ned has jade. Swaps: Hal-Ned, then Ned-Ivy, then Ned-Hal. At the end, Hal has
    Options:
    (A) lime
    (B) navy
    (C) jade
    Hal-Ned: Hal jade, Ivy navy, Ned lime. Ned-Ivy: Hal jade, Ivy lime, Ned navy. Ned-Hal: Hal navy,
      Ivy lime, Ned jade. Hal has navy. So the answer is (B).
    Hal has jade after Hal-Ned, jade after Ned-Ivy, navy after Ned-Hal. So the answer is (B).
    Hal has jade after Hal-Ned, jade after Ned-Ivy, jade after Ned-Hal. So the answer is (C).  (a swap forgotten)
  logical_deduction                                                            target "(B)"
    Hal, Ivy and Ned stand in a row. Hal is left of Ned. Ivy is left of Hal. Who is the leftmost?
    Options:
    (A) Hal
    (B) Ivy
    (C) Ned
    Hal is left of Ned: Hal Ned. Ivy is left of Hal: Ivy Hal Ned. Ivy is the leftmost. So the answer is (B).
    The order from the left is Ivy Hal Ned. Ivy is the leftmost. So the answer is (B).
    The order from the left is Hal Ivy Ned. Hal is the leftmost. So the answer is (A).
  date_arithmetic        Today is 05/17/2020. What is the date 22 days ago in MM/DD/YYYY?   target "04/25/2020"
    Day 17 - 22 = -5. April 2020 has 30 days: -5 + 30 = 25 of April. The date is 04/25/2020.
      So the answer is 04/25/2020.
    April has 30 days, so 22 days before 05/17/2020 is 04/25/2020. So the answer is 04/25/2020.
    April has 31 days, so 22 days before 05/17/2020 is 04/26/2020. So the answer is 04/26/2020.
  word_sorting           Sort the following words alphabetically: List: rug zoo oar quilt   target "oar quilt rug zoo"
    Start with rug. Add zoo: rug zoo. Add oar: oar rug zoo. Add quilt: oar quilt rug zoo.
      So the answer is oar quilt rug zoo.
    By first letter: o, q, r, z. So the answer is oar quilt rug zoo.
    By first letter: o, q, z, r. So the answer is oar quilt zoo rug.
  addition (optional)    What is 563 + 986?                                    target "1549"
    3+6=9, write 9. 6+8=14, write 4 carry 1. 5+9+1=15, write 5 carry 1. Write the last carry 1. So the answer is 1549.
    The columns from the right give 9, 4, 5, then the last carry 1. So the answer is 1549.
    The columns from the right give 9, 4, 5. So the answer is 549.       (the last carry forgotten)

Held-out questions come from their own random streams, never repeat a training question, and include
harder variants (more operands, objects, words or month ends; see each family's `sizes`). Each
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
    manifest.json       the arguments, the teachers, and per family its sizes, answer form and errors
"""

from orca_jax.data.mini_orca.arithmetic import addition_question, explain_addition
from orca_jax.data.mini_orca.base import SHORT_BEHAVIOURS, SYSTEM_MESSAGES, Family, Problem, closing
from orca_jax.data.mini_orca.writer import DEFAULT_FAMILIES, FAMILIES, TEACHERS, stream, write_mini_orca

__all__ = ["DEFAULT_FAMILIES", "FAMILIES", "SHORT_BEHAVIOURS", "SYSTEM_MESSAGES", "TEACHERS", "Family", "Problem",
           "addition_question", "closing", "explain_addition", "stream", "write_mini_orca"]  # fmt: skip
