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

    tokenizer  the model's own Jinja `chat_template`, from the tokenizer's folder, laid out exactly as
               transformers' apply_chat_template renders it (jinja_templates.py)
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
    # Set only for a model's own Jinja template (jinja_templates.py): text after the EOS token, not
    # trained on; the text the EOS id stands for in the template's rendering ("" where the template
    # does not write EOS, and the pipeline's EOS is extra); what the reply opens with beyond the
    # generation prompt (trained on); the whitespace the template strips from contents, as
    # "<role><" (left) and "<role>>" (right) for roles system, question, response, without and with
    # a system message (Llama-2's strips the question's left only when there is none).
    trailer: str = ""
    eos_text: str = ""
    response_prefix: str = ""
    trim: tuple[str, ...] = ()
    trim_with_system: tuple[str, ...] = ()

    def _strip(self, text, role: str, with_system: bool, lstrip, rstrip):
        trims = self.trim_with_system if with_system else self.trim
        text = lstrip(text) if role + "<" in trims else text
        return rstrip(text) if role + ">" in trims else text

    def prompt(self, system: str, question: str) -> str:
        strip = lambda text, role: self._strip(text, role, bool(system), str.lstrip, str.rstrip)  # noqa: E731
        before, after = self.system_format.split("{system}")
        block = before + strip(system, "system") + after if system else self.empty_system_block
        head, tail = self.prompt_format.split("{question}")
        pre, post = head.split("{system_block}")  # split, not format: a template's text may hold braces
        return pre + block + post + strip(question, "question") + tail

    def response(self, response: str) -> str:
        response = self._strip(response, "response", False, str.lstrip, str.rstrip)
        return self.response_prefix + response + self.response_suffix

    def text(self, system: str, question: str, response: str) -> str:
        """What the example is, as text (the EOS id as the template writes it, if it does): for a
        model's own template, its rendering of the conversation without the leading BOS."""
        return self.prompt(system, question) + self.response(response) + self.eos_text + self.trailer

    def prompt_tf(self, system: tf.Tensor, question: tf.Tensor) -> tf.Tensor:
        """`prompt` on string tensors (scalars), inside a tf.data pipeline."""
        has_system = tf.strings.length(system) > 0
        before, after = self.system_format.split("{system}")
        system = self._strip_tf(system, "system", True)
        block = tf.where(has_system, tf.strings.join([before, system, after]), self.empty_system_block)
        question = tf.where(has_system, self._strip_tf(question, "question", True),
                            self._strip_tf(question, "question", False))  # fmt: skip
        head, tail = self.prompt_format.split("{question}")
        pre, post = head.split("{system_block}")
        return tf.strings.join([pre, block, post, question, tail])

    def response_tf(self, response: tf.Tensor) -> tf.Tensor:
        response = self._strip_tf(response, "response", False)
        return tf.strings.join([self.response_prefix, response, self.response_suffix])

    def _strip_tf(self, text: tf.Tensor, role: str, with_system: bool) -> tf.Tensor:
        # RE2's \s is ASCII whitespace, where Jinja's trim is Python's (Unicode spaces too).
        lstrip = lambda t: tf.strings.regex_replace(t, r"^\s+", "")  # noqa: E731
        rstrip = lambda t: tf.strings.regex_replace(t, r"\s+$", "")  # noqa: E731
        return self._strip(text, role, with_system, lstrip, rstrip)


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
    """A built-in template by name, or a model's own Jinja template as resolved (jinja_templates.py)."""
    from orca_jax.data import jinja_templates  # it builds on ChatTemplate

    if jinja_templates.is_spec(name):
        return jinja_templates.template_from_spec(name)
    if name not in TEMPLATES:
        hint = " ('tokenizer' is resolved from a DataConfig's vocabulary folder)" if name == "tokenizer" else ""
        raise ConfigError(f"unknown chat template {name!r}; choose one of {sorted(TEMPLATES)} or 'tokenizer'{hint}")
    return TEMPLATES[name]
