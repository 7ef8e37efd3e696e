"""Chat templates: how a <system, question, response> triple becomes prompt text and response text.

The prompt (system block, question, and whatever opens the reply) carries no loss; the response,
its template suffix and the EOS token carry all of it. Training and evaluation render prompts
through the same template, so a model is asked questions in the layout it was trained on.

For system "Be brief.", question "What is 2 + 3?", response "5.":

    orca     "### System:\nBe brief.\n\n### User:\nWhat is 2 + 3?\n\n### Response:\n" + "5." + EOS
    chatml   "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
             "<|im_start|>assistant\n" + "5.<|im_end|>" + EOS
    llama2   "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2 + 3? [/INST] " + "5." + EOS
    plain    "Be brief.\n\nWhat is 2 + 3?\n" + "5." + EOS

An empty system message keeps Orca's header (as in Orca's zero-shot evaluation) and drops the
system block of the others. ChatML's markers are plain text unless the vocabulary adds them as
tokens (DataConfig.added_tokens).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from orca_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    name: str
    prompt_format: str  # has {system_block} and {question}
    system_format: str  # has {system}: the system block when there is a message
    empty_system_block: str  # the system block when the message is empty
    response_suffix: str = ""  # closes the reply; trained on, like the response

    def prompt(self, system: str, question: str) -> str:
        block = self.system_format.format(system=system) if system else self.empty_system_block
        return self.prompt_format.format(system_block=block, question=question)

    def response(self, response: str) -> str:
        return response + self.response_suffix

    def prompt_tf(self, system: tf.Tensor, question: tf.Tensor) -> tf.Tensor:
        """`prompt` on string tensors (scalars), inside a tf.data pipeline."""
        before, after = self.system_format.split("{system}")
        block = tf.where(tf.strings.length(system) > 0, tf.strings.join([before, system, after]),
                         self.empty_system_block)  # fmt: skip
        head, tail = self.prompt_format.split("{question}")
        pre, post = head.split("{system_block}")
        return tf.strings.join([pre, block, post, question, tail])

    def response_tf(self, response: tf.Tensor) -> tf.Tensor:
        return tf.strings.join([response, self.response_suffix])


TEMPLATES = {
    "orca": ChatTemplate(
        "orca",
        "{system_block}### User:\n{question}\n\n### Response:\n",
        "### System:\n{system}\n\n",
        "### System:\n\n\n",
    ),
    "chatml": ChatTemplate(
        "chatml",
        "{system_block}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\n{system}<|im_end|>\n",
        "",
        response_suffix="<|im_end|>",
    ),
    "llama2": ChatTemplate("llama2", "[INST] {system_block}{question} [/INST] ", "<<SYS>>\n{system}\n<</SYS>>\n\n", ""),
    "plain": ChatTemplate("plain", "{system_block}{question}\n", "{system}\n\n", ""),
}
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


def get_template(name: str) -> ChatTemplate:
    if name not in TEMPLATES:
        raise ConfigError(f"unknown chat template {name!r}; choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]
