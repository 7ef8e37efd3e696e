"""Chat templates: how a <system, question, response> triple becomes prompt text and response text.

The template renders two strings. The prompt (system message, question, and the header that opens
the response) carries no loss; the response (followed by the vocabulary's EOS token, added at
tokenization) carries all of it. Training and evaluation render prompts through the same template,
so a model is always asked questions in the layout it was trained on.

The Orca layout, for system "Think step by step.", question "What is 2 + 3?":

    ### System:
    Think step by step.

    ### User:
    What is 2 + 3?

    ### Response:
    2+3=5, write 5. So the answer is 5.</s>

An empty system message keeps its header, as in Orca's zero-shot evaluation.
"""

from __future__ import annotations

import dataclasses

from orca_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    name: str
    prompt_format: str  # has {system} and {question}

    def prompt(self, system: str, question: str) -> str:
        return self.prompt_format.format(system=system, question=question)


TEMPLATES = {
    "orca": ChatTemplate("orca", "### System:\n{system}\n\n### User:\n{question}\n\n### Response:\n"),
}


def get_template(name: str) -> ChatTemplate:
    if name not in TEMPLATES:
        raise ConfigError(f"unknown chat template {name!r}; choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]
