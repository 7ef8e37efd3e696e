"""The mini-Orca student's vocabulary: a small SentencePiece BPE model trained on the training text.

With bytes as tokens, a name or a colour is three or four tokens and "tells the truth" fifteen, so
most of a row is spent spelling words and a 0.3M-parameter student must learn to copy spellings
before it can copy facts. A 640-piece BPE model fitted to the generator's closed vocabulary makes
each word one token (about 2.8 bytes per token on the training text) while every digit stays its
own token (`split_digits`), as in LLaMA's tokenizer, so column arithmetic is still digit by digit.
Byte fallback keeps any other text encodable, and the ids follow LLaMA's convention (unk 0, never
produced with byte fallback; BOS 1; EOS 2), so 0 stays free for padding.

Training is single-threaded and the input is a fixed function of the generator's arguments, so the
same arguments write the same `tokenizer.model`, byte for byte.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import sentencepiece as spm

from orca_jax.data.templates import TEMPLATES

VOCAB_SIZE = 640  # 259 ids for unk, BOS, EOS and the 256 byte pieces; the rest are merges (at most)


def train_tokenizer(texts: Iterable[str], path: str, vocab_size: int = VOCAB_SIZE) -> None:
    """Fits the BPE model to `texts` (plus every chat template's fixed strings) and writes it to `path`."""
    template_text = [t.prompt("System message.", "Question?") + t.response("Answer.") for t in TEMPLATES.values()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([*template_text, *texts]),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        split_digits=True,
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        # The text round-trips exactly: no normalization, no whitespace folding, and no space in
        # front of a text that does not have one (a response is tokenized on its own).
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        max_sentence_length=1 << 14,
        hard_vocab_limit=False,  # a small data set may have fewer merges to make: the vocabulary is then smaller
        num_threads=1,
        minloglevel=2,
    )
    with open(path, "wb") as f:
        f.write(model.getvalue())
