"""Text for people: ages, times, sizes, and untrusted text (bodies, headers) made safe for a terminal."""

from __future__ import annotations

import time
from typing import Any

_UNITS = ((86400.0, "d"), (3600.0, "h"), (60.0, "m"), (1.0, "s"))


def age(seconds: Any) -> str:
    """12s, 4m10s, 3h05m, 2d04h; ``-`` for none."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 60:
        return f"{s:.0f}s" if s >= 10 else f"{s:.1f}s"
    for i, (size, unit) in enumerate(_UNITS[:-1]):
        if s >= size:
            small, sunit = _UNITS[i + 1]
            return f"{int(s // size)}{unit}{int((s % size) // small):02d}{sunit}"
    return f"{s:.0f}s"  # pragma: no cover - every s >= 60 has a unit above


def until(epoch: Any, now: float | None = None) -> str:
    """An epoch time as seen from now: ``in 4m10s``, ``5s ago``; ``-`` for none."""
    if epoch is None:
        return "-"
    d = float(epoch) - (time.time() if now is None else now)
    return f"in {age(d)}" if d >= 0 else f"{age(-d)} ago"


def when(epoch: Any) -> str:
    """An epoch time as local ISO time to the second; ``-`` for none."""
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(epoch)))


def size(n: Any) -> str:
    if n is None:
        return "-"
    v = float(n)
    for unit in ("B", "K", "M", "G"):
        if v < 1024 or unit == "G":
            return f"{v:.0f}{unit}" if unit == "B" else f"{v:.1f}{unit}"
        v /= 1024
    return str(n)  # pragma: no cover


def safe(text: Any, keep_newlines: bool = False) -> str:
    """Untrusted text with control characters (terminal escapes among them) shown as ``\\xNN``."""
    s = "" if text is None else str(text)
    out = []
    for ch in s:
        if ch.isprintable() or (keep_newlines and ch in "\n\t"):
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)
