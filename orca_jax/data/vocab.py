"""Vocabularies, as `seqio.Vocabulary` objects in which id 0 is padding and nothing else.

SeqIO's packing treats 0 as padding, so no real token may have id 0.

    byte                      UTF-8 bytes after pad 0, BOS 1, EOS 2, UNK 3 (260 ids); needs no file.
    path/to/tokenizer.model   a SentencePiece model (LLaMA-1/2, Mistral: unk 0, bos 1, eos 2, so
                              nothing real is 0; byte fallback means unk never appears).
    path/to/tokenizer.json    a Hugging Face tokenizer (LLaMA-3 style). Its ids start at 0 with a
                              real token, so every id is shifted up by one (`ID_OFFSET`): orca_jax id
                              = tokenizer id + 1, and 0 is free for padding. Import such a model with
                              `orca-import-hf --id_offset 1`, which shifts the embedding rows to match.
                              BOS and EOS are those its tokenizer_config.json names, if it has one
                              (a chat model's EOS is its end-of-turn token), else found by name.

Added tokens (Orca's pad, ChatML's markers) are ids past the base vocabulary: `added_tokens` names
them, in order; they encode from their literal text, as a tokenizer with added tokens would.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import numpy as np
import seqio
import tensorflow as tf

from orca_jax.errors import ConfigError

ID_OFFSET = 1  # shift of tokenizer.json ids
# BOS and EOS of LLaMA's SentencePiece models and of the byte vocabulary: what a model without a
# vocabulary of its own (parameters only) is assumed to use.
DEFAULT_BOS_ID, DEFAULT_EOS_ID = 1, 2


class ByteVocabulary(seqio.ByteVocabulary):
    """seqio's byte vocabulary with a BOS id: pad 0, BOS 1, EOS 2, UNK 3, byte b -> b + 4."""

    def __init__(self):
        super().__init__()
        self._num_special_tokens = 4

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    def __eq__(self, other) -> bool:
        return isinstance(other, ByteVocabulary)


class HFTokenizerVocabulary(seqio.Vocabulary):
    """A Hugging Face `tokenizer.json` as a seqio vocabulary, ids shifted by ID_OFFSET."""

    def __init__(self, path: str, bos_token: str = "", eos_token: str = ""):
        from tokenizers import Tokenizer

        self._path = path
        try:
            self._tokenizer = Tokenizer.from_file(path)
        except Exception as e:  # the tokenizers library raises its own exception types
            raise ConfigError(f"{path}: not a Hugging Face tokenizer.json ({e})") from None
        self._bos = self._special_id(bos_token, ("<|begin_of_text|>", "<s>", "<bos>"))
        self._eos = self._special_id(eos_token, ("<|eot_id|>", "<|end_of_text|>", "</s>", "<eos>"))
        super().__init__()

    def _special_id(self, given: str, candidates: Sequence[str]) -> int:
        for token in (given, *candidates) if given else candidates:
            token_id = self._tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id + ID_OFFSET
        raise ConfigError(f"{self._path}: none of the tokens {list(candidates)} exist; name BOS/EOS explicitly")

    @property
    def bos_id(self) -> int:
        return self._bos

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def unk_id(self) -> int | None:
        return None

    def token(self, token_id: int) -> str:
        """The text of orca_jax id `token_id` (a special token's too)."""
        return self._tokenizer.id_to_token(token_id - ID_OFFSET)

    @property
    def _base_vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True) + ID_OFFSET

    def _encode(self, s: str) -> list[int]:
        return [i + ID_OFFSET for i in self._tokenizer.encode(s, add_special_tokens=False).ids]

    def _decode(self, ids) -> str:
        return self._tokenizer.decode([int(i) - ID_OFFSET for i in ids if int(i) >= ID_OFFSET])

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        def encode(text: bytes) -> np.ndarray:
            return np.array(self._encode(text.decode("utf-8")), np.int32)

        ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
        return tf.ensure_shape(ids, [None])

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.numpy_function(lambda x: self._decode(x.tolist()).encode("utf-8"), [ids], tf.string, stateful=False)

    def __eq__(self, other) -> bool:
        return isinstance(other, HFTokenizerVocabulary) and other._path == self._path


class AddedTokensVocabulary(seqio.Vocabulary):
    """A base vocabulary plus named tokens with ids after it (e.g. `<pad>`, `<|im_start|>`)."""

    def __init__(self, base: seqio.Vocabulary, added: Sequence[str]):
        self.base = base
        self.added = tuple(added)
        self._first = base.vocab_size
        self._pattern = re.compile("(" + "|".join(re.escape(t) for t in self.added) + ")") if self.added else None
        super().__init__()

    bos_id = property(lambda self: self.base.bos_id)
    eos_id = property(lambda self: self.base.eos_id)
    unk_id = property(lambda self: self.base.unk_id)

    @property
    def _base_vocab_size(self) -> int:
        return self._first + len(self.added)

    def token_id(self, token: str) -> int:
        return self._first + self.added.index(token)

    def _encode(self, s: str) -> list[int]:
        if not self._pattern:
            return list(self.base.encode(s))
        ids: list[int] = []
        for piece in self._pattern.split(s):
            if piece in self.added:
                ids.append(self.token_id(piece))
            elif piece:
                ids.extend(self.base.encode(piece))
        return ids

    def _decode(self, ids) -> str:
        out, run = [], []
        for i in map(int, ids):
            if i >= self._first:
                out.append(self.base.decode(run) + self.added[i - self._first])
                run = []
            else:
                run.append(i)
        return "".join(out) + self.base.decode(run)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        if not self._pattern:
            return self.base.encode_tf(s)
        fn = lambda text: np.array(self._encode(text.decode("utf-8")), np.int32)  # noqa: E731
        return tf.ensure_shape(tf.numpy_function(fn, [s], tf.int32, stateful=False), [None])

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.numpy_function(lambda x: self._decode(x.tolist()).encode("utf-8"), [ids], tf.string, stateful=False)

    def __eq__(self, other) -> bool:
        return isinstance(other, AddedTokensVocabulary) and (other.base, other.added) == (self.base, self.added)


def read_tokenizer_config(folder: str, names: Sequence[str] = ("tokenizer_config.json",)) -> dict:
    """The tokenizer configs `names` in `folder`, merged in order (a later file's keys win, as in
    transformers); {} where there are none. A malformed file is one clear error."""
    config: dict = {}
    for name in names:
        path = os.path.join(folder, name)
        if not tf.io.gfile.exists(path):
            continue
        try:
            with tf.io.gfile.GFile(path) as f:
                config.update(json.loads(f.read()))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    return config


def special_token_text(value) -> str:
    """A special token as a tokenizer config writes it: a string, or {"content": ...}; "" for none."""
    return str(value.get("content", "") if isinstance(value, dict) else value or "")


def token_text(vocab: seqio.Vocabulary, token_id: int) -> str:
    """The text of a tokenizer's token (e.g. EOS: "</s>", "<|eot_id|>"); "" for the byte vocabulary."""
    if isinstance(vocab, AddedTokensVocabulary):
        return vocab.added[token_id - vocab._first] if token_id >= vocab._first else token_text(vocab.base, token_id)
    if isinstance(vocab, HFTokenizerVocabulary):
        return vocab.token(token_id)
    if isinstance(vocab, seqio.SentencePieceVocabulary):
        return vocab.tokenizer.id_to_piece(token_id)
    return ""


def make_vocabulary(spec: str, added_tokens: Sequence[str] = ()) -> seqio.Vocabulary:
    """`byte`, a SentencePiece `.model` path, or a `tokenizer.json` path; plus added tokens."""
    if spec == "byte":
        vocab: seqio.Vocabulary = ByteVocabulary()
    elif spec.endswith(".json"):
        if not tf.io.gfile.exists(spec):
            raise ConfigError(f"{spec}: no such tokenizer.json file")
        config = read_tokenizer_config(os.path.dirname(spec))  # a chat model's EOS is its end-of-turn token
        vocab = HFTokenizerVocabulary(spec, special_token_text(config.get("bos_token")),
                                      special_token_text(config.get("eos_token")))  # fmt: skip
    elif spec.endswith(".model") or os.path.basename(spec).startswith("tokenizer.model"):
        if not tf.io.gfile.exists(spec):
            raise ConfigError(f"{spec}: no such SentencePiece model file (DataConfig.vocabulary; a mini-Orca data "
                              "set has its own, written by `orca-data generate-mini`)")  # fmt: skip
        vocab = seqio.SentencePieceVocabulary(spec)
        if 0 in (vocab.bos_id, vocab.eos_id) or vocab.tokenizer.pad_id() == 0:
            raise ConfigError(f"{spec}: id 0 must be unk or unused; it is the padding id here")
    else:
        raise ConfigError(
            f"unknown vocabulary {spec!r}: use 'byte', a SentencePiece .model path or a tokenizer.json path"
        )
    return AddedTokensVocabulary(vocab, added_tokens) if added_tokens else vocab
