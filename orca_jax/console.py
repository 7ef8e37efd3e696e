"""How long-running loops (training, generation, ranking) show time on a progress line."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """3725.2 -> '1h02m05s'; 65 -> '1m05s'."""
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
