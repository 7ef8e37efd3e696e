"""Orca's system messages: sixteen behaviours, in this project's own wording, and how records get one.

Orca asked its teachers for explanations by putting one of sixteen system messages before each
query, drawn from a set that depends on the query's FLAN-v2 sub-collection. The student is trained
with the same message. Records that already carry a system message keep it; a record without one
gets a message drawn from its collection's set, deterministically from the record's id, so the same
record always gets the same message. Behaviours 8 and 10 explain multiple-choice answers and are
drawn only for queries that list options.

Orca 2's prompt erasure trains the student with one generic message in place of the teacher's
detailed one, so that the student learns to choose a strategy itself (`erase`).
"""

from __future__ import annotations

import hashlib
import json

from orca_jax.errors import ConfigError

# Behaviour number (1-16, as Orca numbers them) -> message. Our wording, not the paper's.
BEHAVIOURS = {
    1: "",
    2: "You are an AI assistant. Give a detailed answer, so that the user need not look anywhere else to "
    "understand it.",
    3: "You are an AI assistant. You will be given a task. Produce a detailed and long answer.",
    4: "You are a helpful assistant who always explains. Answer as if you were talking to a five year old.",
    5: "You are an AI assistant that follows instructions extremely well. Help as much as you can.",
    6: "You are an AI assistant that helps people find information. Give a detailed answer, so that the user "
    "need not look anywhere else to understand it.",
    7: "You are an AI assistant. You will be given a task. Complete it as faithfully as you can. While you work, "
    "think step by step and justify each step.",
    8: "You should describe the task and explain your answer. When answering a multiple choice question, first "
    "give the correct answer, then explain why the other choices are wrong. Explain as if to a five year old.",
    9: "Explain how you used the definition of the task to reach your answer.",
    10: "You should describe the task and explain your answer. When answering a multiple choice question, first "
    "give the correct answer, then explain why the other choices are wrong. You may need to use knowledge "
    "beyond the question to answer it.",
    11: "You are an AI assistant that helps people find information. Answer the user's question faithfully. "
    "Think step by step and justify your answer.",
    12: "The user gives you a task with some instructions. Follow them as faithfully as you can. While answering, "
    "think step by step and justify your answer.",
    13: "You are a teacher. Given a task, explain in simple steps what the task asks for, the guidelines it "
    "gives, and how to use those guidelines to find the answer.",
    14: "You are an AI assistant who knows every language and how to translate between them. Given a task, "
    "explain in simple steps what it asks for and the guidelines it gives, then solve it and show how you "
    "used the guidelines.",
    15: "Given the definition of a task and a sample input, break the definition into small parts. For each "
    'part, write "Part #: " followed by the key part of the definition, then "Usage: " followed by an example '
    "that meets it, and explain why it meets the criteria.",
    16: "You are an AI assistant that helps people find information.",
}
MULTIPLE_CHOICE_ONLY = frozenset({8, 10})

# Sub-collection -> behaviours it draws from (Orca's mapping, as the public reproductions use it).
COLLECTIONS = {
    "cot": (6, 11, 16),
    "niv": (1, 2, 5, 7, 9, 12, 13, 14, 15),
    "t0": (1, 2, 3, 5, 7),
    "flan": (3, 4, 7, 8, 10),
}
DEFAULT_COLLECTION = "niv"  # records whose id names no known collection
GENERIC_MESSAGE = "You are a helpful assistant. Think carefully and answer as well as you can."
MODES = ("keep", "orca", "erase")


def collection_of(record_id: str, collection: str = "") -> str:
    """The sub-collection: an explicit field, else the id's prefix (`niv.242684` -> `niv`)."""
    name = (collection or record_id.split(".", 1)[0]).lower()
    return name if name in COLLECTIONS else DEFAULT_COLLECTION


def is_multiple_choice(question: str) -> bool:
    return "Options:" in question or "OPTIONS:" in question


def stable_index(record_id: str, n: int, seed: int = 0) -> int:
    """A deterministic choice among `n`, from the record's id (the same on every host and run)."""
    digest = hashlib.blake2b(f"{seed}:{record_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n


def orca_message(record_id: str, question: str, collection: str = "", seed: int = 0,
                 messages: dict[int, str] | None = None) -> str:  # fmt: skip
    """The Orca system message for a record that has none."""
    messages = messages or BEHAVIOURS
    choices = [b for b in COLLECTIONS[collection_of(record_id, collection)]
               if b not in MULTIPLE_CHOICE_ONLY or is_multiple_choice(question)]  # fmt: skip
    return messages[choices[stable_index(record_id, len(choices), seed)]]


def read_messages_file(path: str) -> dict[int, str]:
    """A user's own wording: JSON `{"1": "", "2": "...", ..., "16": "..."}` (all sixteen behaviours)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot open ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or any(not isinstance(v, str) for v in data.values()):
        raise ConfigError(f'{path}: expected an object mapping behaviour numbers to messages, like {{"2": "..."}}')
    messages = {int(k): v for k, v in data.items() if k.isdigit()}
    missing = sorted(set(BEHAVIOURS) - set(messages))
    if missing:
        raise ConfigError(f"{path}: behaviours {missing} are missing (give all of 1-16)")
    return messages


def system_message(record_id: str, question: str, given: str, *, mode: str, collection: str = "", seed: int = 0,
                   messages: dict[int, str] | None = None) -> str:  # fmt: skip
    """The message a record is trained with. `keep`: its own, even when empty (OpenOrca's empty
    message is behaviour 1). `orca`: its own, or one drawn by Orca's mapping when it has none.
    `erase`: one generic message for every record (Orca 2's prompt erasure)."""
    if mode not in MODES:
        raise ConfigError(f"system messages: mode {mode!r} is not one of {MODES}")
    if mode == "erase":
        return GENERIC_MESSAGE
    if given or mode == "keep":
        return given
    return orca_message(record_id, question, collection, seed, messages)
