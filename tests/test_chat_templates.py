"""A model's own chat template (DataConfig.template = 'tokenizer') against transformers' apply_chat_template.

For Llama-3-, ChatML-, Mistral- and Llama-2-style templates, each in a tokenizer folder as
transformers saves one: the text the pipeline renders for a record is transformers' rendering of
[system?, user, assistant], the evaluation prompt is its rendering with add_generation_prompt, and
the loss falls on exactly the assistant's span (the reply and the template's end-of-turn marker).
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import transformers

from orca_jax.data import jinja_templates
from orca_jax.data.config import DataConfig, FileSet
from orca_jax.data.pipeline import host_batches, register
from orca_jax.data.records import OrcaRecord, write_jsonl
from orca_jax.data.templates import TEMPLATES, get_template
from orca_jax.data.vocab import ID_OFFSET
from orca_jax.errors import ConfigError

# The public templates, as their models' tokenizer_config.json carry them.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}{% set content = "
    "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
    "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + "
    "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
# Llama-3's pre-tokenizer split: newlines apart from the text after them, as in its tokenizer.json.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
STYLES = {  # name: (template, tokenizer kind, bos, eos, special tokens)
    "llama3": (LLAMA3, "json", "<|begin_of_text|>", "<|eot_id|>",
               ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]),
    "chatml": (CHATML, "json", "<s>", "<|im_end|>", ["<s>", "<|im_start|>", "<|im_end|>"]),
    "mistral": (MISTRAL, "sentencepiece", "<s>", "</s>", []),
    # No system role, and contents trimmed: the folded "S\n\nU" is trimmed as one.
    "mistral_trim": (MISTRAL.replace("message['content']", "(message['content'] | trim)"), "sentencepiece", "<s>",
                     "</s>", []),
    "llama2": (LLAMA2, "sentencepiece", "<s>", "</s>", []),
}  # fmt: skip
RECORDS = [
    OrcaRecord(
        "r0", "You are a helpful assistant. Think step by step.", "What is 2 + 3?", "2 + 3 = 5. The answer is 5."
    ),
    OrcaRecord("r1", "", "Name a colour of the sky.", "Blue, on a clear day."),
    OrcaRecord("r2", "Be brief.", "  Is 7 prime?\n", "Yes: its only divisors are 1 and 7."),
    OrcaRecord("r3", " \nAnswer in one word. ", "\n Is 9 prime? ", " No. \n"),
]
CORPUS = [r.system_prompt + " " + r.question + " " + r.response for r in RECORDS] * 20 + [
    "The quick brown fox jumps over the lazy dog. 0123456789 assistant user system"
] * 20


def bpe_tokenizer_json(path: str, special_tokens: list[str]) -> None:
    """A small byte-level BPE tokenizer.json with Llama-3's pre-tokenizer and these special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(path)


def make_tokenizer_folder(folder: str, style: str, sentencepiece_model: str) -> str:
    """A tokenizer folder of this style, as transformers saves one; returns the vocabulary file."""
    template, kind, bos, eos, specials = STYLES[style]
    os.makedirs(folder, exist_ok=True)
    if kind == "json":
        vocabulary = os.path.join(folder, "tokenizer.json")
        bpe_tokenizer_json(vocabulary, specials)
        config = {"tokenizer_class": "PreTrainedTokenizerFast"}
    else:
        vocabulary = os.path.join(folder, "tokenizer.model")
        with open(sentencepiece_model, "rb") as src, open(vocabulary, "wb") as dst:
            dst.write(src.read())
        config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                  "legacy": False, "unk_token": "<unk>"}  # fmt: skip
    config.update(bos_token=bos, eos_token=eos, chat_template=template)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    return vocabulary


def messages(record: OrcaRecord, style: str, reply: bool = True) -> list[dict]:
    """The conversation transformers renders for a record. Mistral's template refuses a system role:
    orca_jax puts the system message before the question, and so does this conversation."""
    out = [{"role": "user", "content": record.question}]
    if record.system_prompt and style.startswith("mistral"):
        out = [{"role": "user", "content": record.system_prompt + "\n\n" + record.question}]
    elif record.system_prompt:
        out.insert(0, {"role": "system", "content": record.system_prompt})
    return out + ([{"role": "assistant", "content": record.response}] if reply else [])


@pytest.fixture(scope="module", params=sorted(STYLES))
def style_folder(request, tmp_path_factory, sentencepiece_model):
    folder = str(tmp_path_factory.mktemp(request.param))
    vocabulary = make_tokenizer_folder(folder, request.param, sentencepiece_model)
    return request.param, folder, vocabulary, transformers.AutoTokenizer.from_pretrained(folder)


def without_bos(text: str, bos: str) -> str:
    return text[len(bos) :] if text.startswith(bos) else text


def test_rendered_text_and_prompts_equal_transformers(style_folder, tmp_path):
    style, folder, vocabulary, hf_tokenizer = style_folder
    bos = STYLES[style][2]
    write_jsonl(str(tmp_path / "r.jsonl"), RECORDS)
    config = DataConfig(sources=(FileSet("mine", train=str(tmp_path / "r.jsonl")),), vocabulary=vocabulary,
                        template="tokenizer")  # fmt: skip
    assert jinja_templates.is_spec(config.template)  # the template itself is what the run records
    template = get_template(config.template)
    for r in RECORDS:
        theirs = hf_tokenizer.apply_chat_template(messages(r, style), tokenize=False)
        # In the tf.data graph, as the pipeline renders it: prompt, response (+ suffix), the EOS id's text, trailer.
        prompt = template.prompt_tf(tf.constant(r.system_prompt), tf.constant(r.question)).numpy().decode()
        response = template.response_tf(tf.constant(r.response)).numpy().decode()
        assert prompt + response + template.eos_text + template.trailer == without_bos(theirs, bos)
        asked = hf_tokenizer.apply_chat_template(messages(r, style, reply=False), tokenize=False,
                                                 add_generation_prompt=True)  # fmt: skip
        assert template.prompt(r.system_prompt, r.question) == prompt == without_bos(asked, bos)


def test_loss_covers_exactly_the_assistant_span(style_folder, tmp_path):
    style, folder, vocabulary, hf_tokenizer = style_folder
    write_jsonl(str(tmp_path / "r.jsonl"), RECORDS)
    config = DataConfig(sources=(FileSet(f"span_{style}", train=str(tmp_path / "r.jsonl")),), vocabulary=vocabulary,
                        template="tokenizer", sequence_length=256)  # fmt: skip
    template, vocab = get_template(config.template), config.make_vocabulary()
    (batch,) = list(host_batches(config, "train", len(RECORDS), shuffle=False, seed=None, num_epochs=1, pack=False))
    for row, r in enumerate(RECORDS):
        real = batch["decoder_segment_ids"][row] > 0
        tokens = batch["decoder_target_tokens"][row][real].tolist()
        loss = batch["decoder_loss_weights"][row][real].astype(bool)
        assert batch["decoder_input_tokens"][row][0] == vocab.bos_id  # the template's BOS, given by the packer
        if STYLES[style][1] == "json":
            # Token for token what transformers gives, and the loss on the tokens of the reply and its
            # end-of-turn marker: the characters from the response to the EOS text's end.
            encoded = hf_tokenizer.apply_chat_template(messages(r, style), tokenize=False)
            ids = hf_tokenizer(encoded, add_special_tokens=False, return_offsets_mapping=True)
            assert tokens == [i + ID_OFFSET for i in ids["input_ids"]][1 if style == "llama3" else 0 :]
            reply = template.response(r.response) + template.eos_text  # as rendered: trimmed, with its marker
            start = encoded.rindex(reply)
            end = start + len(reply)
            in_span = [start <= a and b <= end for a, b in ids["offset_mapping"]][1 if style == "llama3" else 0 :]
            assert loss.tolist() == in_span
            if style == "chatml":
                assert not loss[-1] and vocab.decode(tokens[-1:]) == "\n"  # the trailer: no loss
        else:  # SentencePiece: the loss falls on the reply, its suffix and EOS, and on nothing before them
            weighted = np.array(tokens)[loss].tolist()
            assert weighted[-1] == vocab.eos_id and tokens[-1] == vocab.eos_id
            assert vocab.decode(weighted[:-1]) == template.response(r.response)
            assert loss.tolist() == [False] * (len(tokens) - len(weighted)) + [True] * len(weighted)
            assert vocab.decode(np.array(tokens)[~loss].tolist()) == template.prompt(r.system_prompt, r.question)


def test_unusable_templates_are_clear_errors(tmp_path, sentencepiece_model):
    vocabulary = make_tokenizer_folder(str(tmp_path / "ok"), "mistral", sentencepiece_model)
    os.remove(tmp_path / "ok" / "tokenizer_config.json")
    with pytest.raises(ConfigError, match=r"DataConfig.template = 'tokenizer' but .*ok has no chat template"):
        DataConfig(sources=(FileSet("x", train="x"),), vocabulary=vocabulary, template="tokenizer")
    with pytest.raises(ConfigError, match=r"needs DataConfig.vocabulary to be a tokenizer file"):
        DataConfig(sources=(FileSet("x", train="x"),), vocabulary="byte", template="tokenizer")
    reply_twice = "{% for m in messages %}{{ m['content'] }}|{{ m['content'] }}{% endfor %}"
    spec = jinja_templates.PREFIX + json.dumps({"chat_template": reply_twice, "bos_token": "", "eos_token": ""})
    with pytest.raises(ConfigError, match="2 times, not once"):
        get_template(spec)
    asks_differently = CHATML.replace("assistant\n' }}", "bot\n' }}")
    assert asks_differently != CHATML
    spec = jinja_templates.PREFIX + json.dumps({"chat_template": asks_differently, "bos_token": "", "eos_token": ""})
    with pytest.raises(ConfigError, match="generation prompt"):
        get_template(spec)
    # A Llama-3 template with a SentencePiece vocabulary: its <|eot_id|> is no token there. Found when
    # the pipeline is built, not when a config is read (a stored one may name files long gone).
    with open(tmp_path / "ok" / "tokenizer_config.json", "w") as f:
        json.dump({"chat_template": LLAMA3, "bos_token": "<s>", "eos_token": "<|eot_id|>"}, f)
    config = DataConfig(sources=(FileSet("x", train="x"),), vocabulary=vocabulary, template="tokenizer")
    with pytest.raises(ConfigError, match="EOS is '</s>'"):
        register(config)
    # ... and a Mistral template writing </s> after the question, which SentencePiece would spell out.
    with open(tmp_path / "ok" / "tokenizer_config.json", "w") as f:
        json.dump({"chat_template": MISTRAL.replace("' [/INST]'", "' [/INST]' + eos_token"), "bos_token": "<s>",
                   "eos_token": "</s>"}, f)  # fmt: skip
    config = DataConfig(sources=(FileSet("x", train="x"),), vocabulary=vocabulary, template="tokenizer")
    with pytest.raises(ConfigError, match="would encode as characters"):
        register(config)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_orca_jax_templates_written_as_jinja_render_the_same(name):
    """What an export of a run trained in orca, chatml, llama2 or plain carries as its chat_template."""
    from transformers.utils.chat_template_utils import render_jinja_template

    template = TEMPLATES[name]
    source = jinja_templates.to_jinja(template)
    for system in ("", "Be brief."):
        chat = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "Q {x}?"}]
        kwargs = dict(chat_template=source, bos_token="<s>", eos_token="</s>")
        asked = render_jinja_template([chat], add_generation_prompt=True, **kwargs)[0][0]
        assert asked == "<s>" + template.prompt(system, "Q {x}?")
        whole = render_jinja_template([chat + [{"role": "assistant", "content": "A."}]], **kwargs)[0][0]
        assert whole == "<s>" + template.prompt(system, "Q {x}?") + template.response("A.") + "</s>"
    # Read back as a model's own template, it splits into the same layout.
    back = get_template(jinja_templates.PREFIX + json.dumps({"chat_template": source, "bos_token": "<s>",
                                                             "eos_token": "</s>"}))  # fmt: skip
    for system in ("", "Be brief."):
        assert back.text(system, "Q?", "A.") == template.prompt(system, "Q?") + template.response("A.") + "</s>"
