"""A TFDS builder for explanation-tuning records you already have (nothing is downloaded).

    import tensorflow_datasets as tfds
    from orca_jax.data.tfds_builder import OrcaRecords
    builder = OrcaRecords(config="openorca", data_dir="/data/tfds")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="/data/openorca"))

The manual folder holds the record files (`*.jsonl`, `*.parquet`, `*.tfrecord*`; ShareGPT JSONL for
the `sharegpt` config). Every record is validated; invalid ones are skipped and counted in the log.
The validation split is the records whose id hashes below VALIDATION_FRACTION, so it is the same for
every build, on every machine, whatever the file order. Train on the result with
`FileSet(name=..., train="tfds:orca_records/openorca", tfds_data_dir="/data/tfds")`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter

import tensorflow as tf
import tensorflow_datasets as tfds

from orca_jax.data import readers
from orca_jax.data.records import Rejection

VALIDATION_FRACTION = 0.01
FEATURES = ("id", "system_prompt", "question", "response", "collection")


def is_validation(record_id: str, fraction: float = VALIDATION_FRACTION) -> bool:
    digest = hashlib.blake2b(record_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


class OrcaRecords(tfds.core.GeneratorBasedBuilder):
    """<system message, question, teacher response> records from files in the manual folder."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="openorca", description="OpenOrca columns: JSONL, parquet or TFRecord"),
        tfds.core.BuilderConfig(name="sharegpt", description="SlimOrca's ShareGPT JSONL"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the record files (.jsonl, .parquet, .tfrecord) in the manual folder."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({name: tfds.features.Text() for name in FEATURES}),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        folder = str(dl_manager.manual_dir)
        files = sorted(
            f for f in tf.io.gfile.glob(os.path.join(folder, "*"))
            if f.endswith((".jsonl", ".json", ".parquet")) or ".tfrecord" in os.path.basename(f)
        )  # fmt: skip
        if not files:
            raise FileNotFoundError(f"{folder}: no .jsonl, .parquet or .tfrecord files")
        return {"train": self._generate_examples(files, False), "validation": self._generate_examples(files, True)}

    def _generate_examples(self, files: list[str], validation: bool):
        skipped: Counter = Counter()
        for path in files:
            for where, item in readers.scan_file(path, self.builder_config.name):
                if isinstance(item, Rejection):
                    skipped[item.reason] += 1
                    continue
                if is_validation(item.id) == validation:
                    yield where, {name: getattr(item, name) for name in FEATURES}
        if skipped:
            logging.warning("orca_records: skipped invalid records: %s", dict(skipped))
