"""Vocabularies, as `seqio.Vocabulary` objects with LLaMA's special-id layout.

Every vocabulary here keeps id 0 for padding and nowhere else (SeqIO's packing treats 0 as
padding), with BOS 1 and EOS 2 as in LLaMA-1/2's SentencePiece model.

`byte`: UTF-8 bytes, id = byte + 4 after pad 0, BOS 1, EOS 2, UNK 3; 260 ids. It needs no file,
which is why the built-in mini-Orca run uses it. A path to a SentencePiece `.model` file selects
that model (LLaMA-1/2, Mistral).
"""

from __future__ import annotations

import os

import seqio

from orca_jax.errors import ConfigError


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


def make_vocabulary(spec: str) -> seqio.Vocabulary:
    """`byte`, or a path to a SentencePiece model file."""
    if spec == "byte":
        return ByteVocabulary()
    if spec.endswith(".model"):
        if not os.path.isfile(spec):
            raise ConfigError(f"{spec}: no such SentencePiece model file")
        vocab = seqio.SentencePieceVocabulary(spec)
        if vocab.tokenizer.pad_id() == 0 or vocab.bos_id == 0 or vocab.eos_id == 0:
            raise ConfigError(f"{spec}: id 0 must be unk or unused; it is the padding id here")
        return vocab
    raise ConfigError(f"unknown vocabulary {spec!r}: use 'byte' or a path to a SentencePiece .model file")
