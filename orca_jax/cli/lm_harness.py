"""orca-lm-eval: lm-evaluation-harness's own command line, with orca_jax models registered as `orca_jax`.

    orca-lm-eval --model orca_jax --model_args path=/runs/mini,dtype=float32 --tasks arc_challenge --batch_size 16

Plain `lm_eval --model orca_jax` cannot work: lm-eval 0.4.13 reads no plugin entry points, so a
model exists for its command line only once a module has registered it. This binary imports the
adapter (orca_jax/evaluation/lm_harness.py, which registers it), then hands every argument to
lm-eval unchanged. Needs the `lm_eval` extra: pip install -e ".[lm_eval]".
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from orca_jax.errors import ConfigError, exit_on_user_error


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    try:
        from lm_eval.__main__ import cli_evaluate

        from orca_jax.evaluation import lm_harness  # noqa: F401  (registers "orca_jax")
    except ImportError as e:
        raise ConfigError(f'orca-lm-eval needs lm-eval: pip install -e ".[lm_eval]" ({e})') from None
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
