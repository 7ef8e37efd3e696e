"""Paths that may be local or remote (gs://): every file the trainer and evaluator write goes through
tf.io.gfile, so MODEL_DIR can be a bucket on a TPU pod."""

from __future__ import annotations

import os

import tensorflow as tf


def absolute(path: str) -> str:
    """An absolute local path, or a URI (gs://...) unchanged."""
    return path if "://" in path else os.path.abspath(path)


def join(*parts: str) -> str:
    return os.path.join(*parts)


def write_text(path: str, text: str) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)
