"""Word sorting, as BIG-Bench-Hard's word_sorting: "Sort the following words alphabetically: List:
oven cat dog", target "cat dog oven" (the sorted words separated by spaces). Words in one question
start with different letters, so the first letter decides the order."""

from __future__ import annotations

import random

from orca_jax.data.mini_orca.base import Family, Problem, closing

# Short common words (fewer bytes per row), several for most first letters.
WORDS = tuple(
    """
ant apple arm axe bag bed bell boat box cake cap cat coin cup desk dog door drum duck ear egg elf
elm eye fan farm fig fish fox game gate gift goat gum hat hen hill horn hut ice ink iron ivy jam jar
jet jug key kid king kite kiwi lamp leaf lid lion log map mat milk moon mug nail neck nest net nut
oak oar oil owl ox pan pea pen pig pot quiz quilt rat ring road rose rug sail salt sock sun swan tap
tea tent toe toy urn van vase vest vine wall web well wig wolf yak yam yarn zoo zip
""".split()
)


def _insertion(words: list[str]) -> list[str]:
    """The strong teacher: insertion sort, one word at a time."""
    steps, done = [f"Start with {words[0]}."], [words[0]]
    for word in words[1:]:
        done = sorted([*done, word])
        steps.append(f"Add {word}: {' '.join(done)}.")
    return steps


def _by_letter(words: list[str]) -> str:
    """The intermediate teacher: the first letters in order, then the list."""
    return f"By first letter: {', '.join(w[0] for w in words)}. {closing(' '.join(words))}"


def make_word_sorting(rng: random.Random, hard: bool) -> Problem:
    """Train: 3 or 4 words; hard: 6 to 8."""
    n = rng.randint(6, 8) if hard else rng.randint(3, 4)
    by_letter: dict[str, list[str]] = {}
    for w in WORDS:
        by_letter.setdefault(w[0], []).append(w)
    words = [rng.choice(by_letter[c]) for c in rng.sample(sorted(by_letter), n)]
    ordered = sorted(words)
    target = " ".join(ordered)
    i = rng.randrange(n - 1)  # the slip: two neighbours in the wrong order
    wrong = [*ordered[:i], ordered[i + 1], ordered[i], *ordered[i + 2 :]]
    return Problem(
        question=f"Sort the following words alphabetically: List: {' '.join(words)}",
        target=target,
        strong=" ".join([*_insertion(words), closing(target)]),
        intermediate=_by_letter(ordered),
        flawed=_by_letter(wrong),
        size=n,
    )


WORD_SORTING = Family(
    "word_sorting", make_word_sorting, "niv", "the sorted words separated by spaces",
    ("3-4 words", "6-8 words"),
    "word_sorting, with short words of distinct first letters",
)  # fmt: skip
