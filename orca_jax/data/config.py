"""What to train on and how it becomes rows: `FileSet` (one SeqIO task) and `DataConfig` (the run's data).

A `DataConfig` with one `FileSet` reads that task; with several it reads a SeqIO mixture of them at
their rates (progressive learning: stage 1 on ChatGPT responses, stage 2 on GPT-4's). pipeline.py
turns a config into each host's packed batches; validation.py checks its files first.

Policies:

    policy      strict: the first bad record stops the run before anything is built
                skip:   bad records are counted per reason (and listed per line) and left out
    overlong    drop: an example longer than the row is left out and counted as `over_length`
                trim_prompt: its prompt is cut from the left so the response fits
"""

from __future__ import annotations

import dataclasses
import os

import seqio

from orca_jax.data import jinja_templates, packing, records, system_messages
from orca_jax.data.templates import get_template
from orca_jax.data.vocab import make_vocabulary
from orca_jax.errors import ConfigError

POLICIES = ("strict", "skip")
OVERLONG = ("drop", "trim_prompt")


@dataclasses.dataclass(frozen=True)
class FileSet:
    """One SeqIO task: files (comma-separated paths or globs) in one record format."""

    name: str
    train: str
    validation: str = ""
    format: str = "openorca"  # openorca | sharegpt
    rate: float = 1.0  # its share of a mixture
    # Without validation files, this fraction of the train files' records (chosen by a hash of the
    # record id, the same on every run and host) is the validation split and is never trained on.
    holdout_fraction: float = 0.0
    # `train = "tfds:orca_records/openorca"` reads a data set built by orca_jax.data.tfds_builder
    # (its own train and validation splits) from this folder.
    tfds_data_dir: str = ""

    def __post_init__(self):
        if self.format not in records.FORMATS:
            raise ConfigError(f"FileSet {self.name}: format {self.format!r} is not one of {records.FORMATS}")

    def files(self, split: str) -> tuple[str, str]:
        """(files, holdout) for a split: holdout is "" (every record), "drop" or "keep" (the held-out ones)."""
        if self.train.startswith("tfds:"):
            return self.train, ""  # the TFDS data set has its own validation split
        if split == "validation" and not self.validation and self.holdout_fraction:
            return self.train, "keep"
        files = getattr(self, split)
        return files, ("drop" if split == "train" and self.holdout_fraction and not self.validation else "")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to train on and how it becomes rows."""

    sources: tuple[FileSet, ...]
    name: str = "explanations"  # the mixture's name when there are several sources
    vocabulary: str = "byte"  # byte | SentencePiece .model path | tokenizer.json path
    added_tokens: tuple[str, ...] = ()  # e.g. ("<pad>",) for Orca's 32,001 ids
    # orca | chatml | llama2 | plain | tokenizer: the Jinja chat_template in the vocabulary's folder,
    # which becomes its resolved text here (jinja_templates.py), so the run records the template itself
    template: str = "orca"
    system_messages: str = "keep"  # keep | orca | erase (see system_messages.py)
    system_messages_file: str = ""  # your own wording of the 16 behaviours, JSON
    sequence_length: int = 2048
    packing: str = "best_fit"  # best_fit | greedy | none
    pack_window: int = 1000  # examples the packer sees at once
    overlong: str = "drop"  # drop | trim_prompt (cut the prompt from the left so the response fits)
    policy: str = "strict"  # strict: stop at the first bad record; skip: count it, log it, go on
    seed: int = 0  # system-message draws

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))  # gin passes lists
        object.__setattr__(self, "added_tokens", tuple(self.added_tokens))
        if not self.sources:
            raise ConfigError("DataConfig.sources: give at least one FileSet")
        for field, value, allowed in (("packing", self.packing, packing.MODES), ("overlong", self.overlong, OVERLONG),
                                      ("policy", self.policy, POLICIES),
                                      ("system_messages", self.system_messages, system_messages.MODES)):  # fmt: skip
            if value not in allowed:
                raise ConfigError(f"DataConfig.{field}: {value!r} is not one of {allowed}")
        if self.template == "tokenizer":
            folder = os.path.dirname(self.vocabulary) if self.vocabulary not in ("byte", "") else ""
            if not folder:
                raise ConfigError("DataConfig.template = 'tokenizer' needs DataConfig.vocabulary to be a tokenizer "
                                  f"file in a folder with its chat template, not {self.vocabulary!r}")  # fmt: skip
            object.__setattr__(self, "template", jinja_templates.spec_from_folder(folder, "DataConfig.template"))
        get_template(self.template)

    @property
    def task_name(self) -> str:
        return self.sources[0].name if len(self.sources) == 1 else self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        d = dict(d)
        d["sources"] = tuple(FileSet(**s) for s in d["sources"])
        d["added_tokens"] = tuple(d.get("added_tokens", ()))
        return cls(**d)

    def make_vocabulary(self) -> seqio.Vocabulary:
        return make_vocabulary(self.vocabulary, self.added_tokens)

    def read_messages(self) -> dict[int, str] | None:
        """The user's wording of the sixteen behaviours, or None for ours."""
        return system_messages.read_messages_file(self.system_messages_file) if self.system_messages_file else None

    def system_message(self, record: records.OrcaRecord, messages: dict[int, str] | None) -> str:
        """The system message `record` is trained with under this config's policy."""
        return system_messages.system_message(
            record.id, record.question, record.system_prompt, mode=self.system_messages,
            collection=record.collection, seed=self.seed, messages=messages,
        )  # fmt: skip
