"""A model's own chat template (the Jinja `chat_template` of its tokenizer_config.json), as a ChatTemplate.

The pipeline renders prompts inside a tf.data graph, so a Jinja template is not run per record:
it is rendered once with sentinel strings as the contents, and the text is cut at the sentinels
into the pieces a ChatTemplate has. For Llama-3's template, say:

    render([system S, user U, assistant A]) =
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n" S "<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\\n\\n" U "<|eot_id|><|start_header_id|>assistant"
        "<|end_header_id|>\\n\\n" A "<|eot_id|>"

    BOS text at the start         dropped: the packer gives every example its BOS (packing.py)
    before S, S..U (and, without a system message, before U)    the system block, no loss
    U..A                          the reply's opening, no loss: what the template adds with
                                  add_generation_prompt, which is how evaluation asks; anything the
                                  rendering has beyond that (Llama-2's space) starts the response
    after A, up to the EOS text   the response suffix, with loss; the EOS text becomes the EOS id,
                                  so it is neither spelt out in characters nor doubled
    after the EOS text            the trailer (ChatML's "\\n" after <|im_end|>), no loss

A template whose end-of-turn marker is not the EOS token (ChatML with a LLaMA tokenizer) keeps the
marker as the suffix and the pipeline adds EOS after it, so the model learns to stop. A template
that refuses a system role (Mistral's raises) gets the system message before the question, as
"S\\n\\nU" in the user turn; one that trims contents (`| trim`) gets them trimmed in the graph too.

A resolved template is a string, `jinja:` + JSON of the template text and its BOS and EOS texts,
so that a checkpoint's meta holds the template itself and evaluation and export never need the
folder it came from.
"""

from __future__ import annotations

import functools
import json
import os
from datetime import datetime

from orca_jax.data.templates import ChatTemplate, get_template
from orca_jax.data.vocab import read_tokenizer_config, special_token_text, token_text
from orca_jax.errors import ConfigError

PREFIX = "jinja:"
SENTINELS = {"system": "ORCASYSTEMSENTINEL", "user": "ORCAUSERSENTINEL", "assistant": "ORCAASSISTANTSENTINEL"}
FOLDED_SYSTEM = "\n\n"  # between the system message and the question where a template has no system role


def read_folder_template(folder: str) -> dict | None:
    """{"chat_template", "bos_token", "eos_token"} of a tokenizer folder, or None when it has no chat
    template. transformers 5 writes the template to chat_template.jinja; older folders keep it in
    tokenizer_config.json (a string, or a list of named templates of which "default" is used)."""
    config = read_tokenizer_config(folder, ("special_tokens_map.json", "tokenizer_config.json"))
    template = config.get("chat_template")
    jinja_file = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja_file):
        with open(jinja_file) as f:
            template = f.read()
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not template:
        return None
    return {"chat_template": template, "bos_token": special_token_text(config.get("bos_token")),
            "eos_token": special_token_text(config.get("eos_token"))}  # fmt: skip


def spec_from_folder(folder: str, field: str) -> str:
    """The resolved template spec of the tokenizer folder `folder`; `field` names the setting that
    asked for it, for the error when the folder has none."""
    spec = folder_template(folder, "")
    if not spec:
        raise ConfigError(
            f"{field} = 'tokenizer' but {folder} has no chat template (no chat_template in tokenizer_config.json, "
            "no chat_template.jinja); add one there, or choose one of orca, chatml, llama2, plain"
        )
    return spec


def folder_template(folder: str, default: str) -> str:
    """The resolved spec of a folder's own chat template, or `default` when it has none. Not split
    here: a template orca_jax cannot split stops only what asks for prompts in it."""
    found = read_folder_template(folder)
    return PREFIX + json.dumps(found, sort_keys=True) if found else default


def is_spec(name: str) -> bool:
    return name.startswith(PREFIX)


def parse_spec(spec: str) -> dict:
    try:
        found = json.loads(spec[len(PREFIX) :])
        return {k: found[k] for k in ("chat_template", "bos_token", "eos_token")}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"chat template {spec[:60]!r}...: not a resolved Jinja template spec ({e})") from None


@functools.cache
def _compile(chat_template: str):
    """The template compiled as transformers compiles it (sandboxed, trim_blocks, lstrip_blocks)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(chat_template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ConfigError(f"chat template: Jinja syntax error at line {e.lineno}: {e.message}") from None


def render(spec: dict, messages: list[dict], add_generation_prompt: bool) -> str:
    """The template's text for `messages`, as transformers' apply_chat_template(tokenize=False) gives it."""
    return _compile(spec["chat_template"]).render(
        messages=messages, add_generation_prompt=add_generation_prompt, bos_token=spec["bos_token"],
        eos_token=spec["eos_token"], tools=None, documents=None,
    )  # fmt: skip


def _try_render(spec: dict, messages: list[dict], add_generation_prompt: bool) -> str | None:
    """The rendering, or None where the template refuses the messages (raise_exception)."""
    import jinja2

    try:
        return render(spec, messages, add_generation_prompt)
    except jinja2.exceptions.TemplateError:
        return None


def _chat(system: str | None, user: str, assistant: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": user})
    return messages + ([{"role": "assistant", "content": assistant}] if assistant is not None else [])


def _cut(text: str, marks: list[str], what: str) -> list[str]:
    """`text` split at each of `marks`, which must each occur once and in this order."""
    pieces = []
    for mark in marks:
        if text.count(mark) != 1:
            raise ConfigError(f"chat template: its rendering of {what} holds the {mark} content "
                              f"{text.count(mark)} times, not once; orca_jax cannot split it into prompt and "
                              "reply")  # fmt: skip
        head, text = text.split(mark)
        pieces.append(head)
    return pieces + [text]


def _trims(spec: dict, with_system: bool) -> tuple[str, ...]:
    """Where the template strips whitespace from contents (`message['content'] | trim`): "<role><"
    for the left of role's content, "<role>>" for its right (roles system, question, response)."""
    pad = {role: f" \n{s}\n " for role, s in SENTINELS.items()}
    text = _try_render(spec, _chat(pad["system"] if with_system else None, pad["user"], pad["assistant"]), False)
    if text is None:  # no system role (the message is folded into the question)
        return ()
    names = {"system": "system", "user": "question", "assistant": "response"}
    out = []
    for role, sentinel in SENTINELS.items():
        if sentinel in text:
            out += [names[role] + "<"] if pad[role][:-2] not in text else []
            out += [names[role] + ">"] if pad[role][2:] not in text else []
    return tuple(out)


def _folded_trims(trims: tuple[str, ...]) -> tuple[str, ...]:
    """Where a template without a system role trims "S\n\nU" as one user content: S's left, U's right."""
    return tuple(
        t for t in ("system<" if "question<" in trims else "", "question>" if "question>" in trims else "") if t
    )


@functools.cache
def template_from_spec(spec_text: str) -> ChatTemplate:
    """The ChatTemplate of a resolved spec (see the module docstring); a template that does not
    split into prompt and reply is a ConfigError saying why."""
    spec = parse_spec(spec_text)
    bos, eos = spec["bos_token"], spec["eos_token"]
    s, u, a = SENTINELS["system"], SENTINELS["user"], SENTINELS["assistant"]
    plain = render(spec, _chat(None, u, a), False)
    empty_block, opening, suffix = _cut(plain, [u, a], "a user and an assistant message")
    with_system = _try_render(spec, _chat(s, u, a), False)
    if with_system is None:  # no system role: the message goes before the question
        system_format = empty_block + "{system}" + FOLDED_SYSTEM
    else:
        before, between, opening2, suffix2 = _cut(with_system, [s, u, a], "a system, user and assistant message")
        if (opening2, suffix2) != (opening, suffix):
            raise ConfigError("chat template: the reply is laid out differently with and without a system message; "
                              "orca_jax cannot split it into one prompt and reply layout")  # fmt: skip
        system_format = before + "{system}" + between
    asked_openings = set()
    for system in [None] if with_system is None else [None, s]:
        asked = render(spec, _chat(system, u, None), True)
        laid = (empty_block if system is None else system_format.replace("{system}", s)) + u + opening
        asked_openings.add(asked[len(laid) - len(opening) :])
        if not laid.startswith(asked) or len(asked_openings) > 1:
            raise ConfigError(
                "chat template: its generation prompt (add_generation_prompt) differs from its rendering of a "
                f"conversation up to the reply ({asked[-40:]!r} vs {laid[-40:]!r}); a model trained on one would "
                "be asked in the other"
            )
    # What the reply opens with beyond the generation prompt (Llama-2's space before the answer) is
    # the model's to write: it goes into the response, so that the model is asked as servers ask it.
    (asked_opening,) = asked_openings
    response_prefix, opening = opening[len(asked_opening) :], asked_opening
    if bos and empty_block.startswith(bos) and system_format.startswith(bos):
        empty_block, system_format = empty_block[len(bos) :], system_format[len(bos) :]
    if eos and eos in suffix:
        response_suffix, trailer = suffix.split(eos, 1)
        eos_text = eos
    else:  # the end-of-turn marker is not EOS: keep it, and the pipeline's EOS follows it
        response_suffix, trailer, eos_text = suffix.rstrip(), suffix[len(suffix.rstrip()) :], ""
    return ChatTemplate(
        "tokenizer", "{system_block}{question}" + opening, system_format, empty_block, response_suffix,
        trailer=trailer, eos_text=eos_text, response_prefix=response_prefix, trim=_trims(spec, False),
        trim_with_system=_trims(spec, True) if with_system is not None else _folded_trims(_trims(spec, False)),
    )  # fmt: skip


def check_vocabulary(spec_text: str, vocabulary: str, vocab) -> None:
    """The pipeline writes the vocabulary's EOS id where the template writes its EOS text, so the two
    must be one token. And a tokenizer.json turns special tokens' text (Llama-3's <|eot_id|> closing
    every turn) into their ids, as transformers does, while a SentencePiece model would spell them
    out in characters: a template that writes BOS or EOS text elsewhere is refused for it."""
    template, spec = template_from_spec(spec_text), parse_spec(spec_text)
    eos = token_text(vocab, vocab.eos_id)
    if template.eos_text and template.eos_text != eos:
        raise ConfigError(f"chat template: it ends a reply with the EOS token {template.eos_text!r}, but the "
                          f"vocabulary {vocabulary}'s EOS is {eos!r}; use the model's own tokenizer files")  # fmt: skip
    if vocabulary.endswith(".json"):
        return
    pieces = (template.empty_system_block, template.system_format, template.prompt_format, template.response_suffix,
              template.trailer)  # fmt: skip
    for piece in pieces:
        if any(t and t in piece for t in (spec["bos_token"], spec["eos_token"])):
            raise ConfigError(
                f"chat template: it writes BOS or EOS text inside {piece!r}, which the SentencePiece vocabulary "
                f"{vocabulary} would encode as characters; use the model's tokenizer.json"
            )


def chat_template_text(name: str) -> str:
    """The Jinja chat_template of a run's template: a model's own as it came, one of orca_jax's as
    `to_jinja` writes it."""
    return parse_spec(name)["chat_template"] if is_spec(name) else to_jinja(get_template(name))


def to_jinja(template: ChatTemplate) -> str:
    """A Jinja chat_template that renders as `template` does (what an export of a run trained in one of
    orca_jax's own templates carries, so that servers ask the model in the layout it learned): BOS, the
    system block (a first "system" message), then per user turn its prompt and per assistant turn its
    response and EOS. Later user turns repeat the prompt without the system block."""
    if template.trim or template.trim_with_system or template.trailer or template.response_prefix:
        raise ValueError("to_jinja is for orca_jax's own templates; a model's own template is its Jinja already")
    before, after = template.system_format.split("{system}")
    head, tail = template.prompt_format.split("{question}")
    pre, post = head.split("{system_block}")
    pieces = {"PRE": pre, "BEFORE": before, "AFTER": after, "EMPTY": template.empty_system_block, "POST": post,
              "TAIL": tail, "SUFFIX": template.response_suffix}  # fmt: skip
    # A JSON string is a valid Jinja string literal.
    constants = "".join(f"{{% set {name} = {json.dumps(text)} %}}" for name, text in pieces.items())
    return constants + (
        "{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
        "{% set turns = messages[1:] %}{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
        "{% for m in turns %}{% if m['role'] == 'user' %}"
        "{% if loop.first %}{{ PRE }}{% if system %}{{ BEFORE + system + AFTER }}{% else %}{{ EMPTY }}{% endif %}"
        "{{ POST + m['content'] }}{% else %}{{ PRE + POST + m['content'] }}{% endif %}"
        "{% if not loop.last or add_generation_prompt %}{{ TAIL }}{% endif %}"
        "{% elif m['role'] == 'assistant' %}{{ m['content'] + SUFFIX + eos_token }}"
        "{% else %}{{ raise_exception('only system, user and assistant messages') }}{% endif %}{% endfor %}"
    )
