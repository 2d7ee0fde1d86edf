"""A small dependency-free progress bar on stderr.

Used by ``robustagg experiment`` and reusable by the benchmark harness::

    with Progress(total=len(cells), desc="table1") as bar:
        for cell in cells:
            ...
            bar.update(1, postfix=cell_name)

The bar draws itself only when its stream is a terminal (and ``enabled`` is not ``False``):
logs, pipes and CI stay clean. Redraws are throttled (at most ``max_fps`` per second).

With ``lines=True`` progress stays visible when the stream is not a terminal: every
:meth:`Progress.update` then prints one line, e.g.
``table1 3/90 (3%) mean/lie 97.1% | 0:41 elapsed, ~19:53 left`` (used by
``robustagg experiment``, whose cells take seconds to minutes each).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``75.3`` → ``"1:15"``, ``3725`` → ``"1:02:05"``; ``"?"`` for unknown values."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):  # NaN, negative, inf
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A one-line progress bar: ``desc |#####-----| 12/90 13% 0:41<4:27 postfix``.

    Parameters
    ----------
    total : int
        Number of steps expected (0 is allowed: the bar then shows only the count).
    desc : str
        A short label printed before the bar.
    enabled : bool or None
        ``None`` (default) draws only when ``stream`` is a TTY; ``False`` never draws (``--quiet``);
        ``True`` always draws (tests).
    lines : bool, default False
        When the bar is not drawn because ``stream`` is not a TTY (``enabled=None``), print one
        line per :meth:`update` instead: the count, the postfix, the elapsed time and an
        estimate of the time left (elapsed / done × remaining). ``enabled=False`` still prints
        nothing.
    stream : file, default ``sys.stderr``
    width : int
        Width of the bar in characters.
    max_fps : float
        Redraws per second at most (the final state is always drawn).
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        width: int = 28,
        max_fps: float = 10.0,
        lines: bool = False,
    ) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        tty = enabled
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = bool(enabled)
        #: one line per update when not a terminal (and not silenced)
        self.lines = bool(lines) and tty is None and not self.enabled
        self.width = int(width)
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.count = 0
        self.postfix = ""
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_len = 0
        self._closed = False

    # -- public API ---------------------------------------------------------------------------
    def update(self, steps: int = 1, postfix: str | None = None) -> None:
        """Advance by ``steps`` and optionally replace the text after the bar."""
        self.count += int(steps)
        if postfix is not None:
            self.postfix = str(postfix)
        if self.lines:
            print(self.render_line(), file=self.stream, flush=True)
        self._draw(force=self.count >= self.total > 0)

    def set_postfix(self, postfix: str) -> None:
        """Replace the text after the bar without advancing."""
        self.postfix = str(postfix)
        self._draw()

    def write(self, message: str) -> None:
        """Print a line above the bar (the bar is redrawn below it)."""
        if self.enabled:
            self._clear()
        print(message, file=self.stream, flush=True)
        self._draw(force=True)

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(force=True, final=True)
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- drawing ------------------------------------------------------------------------------
    def render(self) -> str:
        """The current line (without carriage return)."""
        elapsed = time.perf_counter() - self.start
        head = f"{self.desc} " if self.desc else ""
        if self.total > 0:
            frac = min(self.count / self.total, 1.0)
            filled = int(round(frac * self.width))
            bar = "#" * filled + "-" * (self.width - filled)
            eta = elapsed / self.count * (self.total - self.count) if self.count else float("nan")
            line = (
                f"{head}|{bar}| {self.count}/{self.total} {frac * 100:3.0f}% "
                f"{format_seconds(elapsed)}<{format_seconds(eta)}"
            )
        else:
            line = f"{head}{self.count} done {format_seconds(elapsed)}"
        if self.postfix:
            line += f" {self.postfix}"
        return line

    def eta(self, elapsed: float | None = None) -> float:
        """Seconds left, estimated as elapsed / done × remaining (NaN before the first step)."""
        if elapsed is None:
            elapsed = time.perf_counter() - self.start
        if not self.count:
            return float("nan")
        return elapsed / self.count * max(self.total - self.count, 0)

    def render_line(self) -> str:
        """The log line of :meth:`update` in ``lines`` mode (no bar, no carriage return)."""
        elapsed = time.perf_counter() - self.start
        head = f"{self.desc} " if self.desc else ""
        if self.total > 0:
            count = f"{self.count}/{self.total} ({min(self.count / self.total, 1.0) * 100:.0f}%)"
            left = "done" if self.count >= self.total else f"~{format_seconds(self.eta(elapsed))} left"
        else:
            count, left = f"{self.count} done", ""
        tail = f"{format_seconds(elapsed)} elapsed" + (f", {left}" if left else "")
        post = f" {self.postfix}" if self.postfix else ""
        return f"{head}{count}{post} | {tail}"

    def _clear(self) -> None:
        if self._last_len:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self._last_len = 0

    def _draw(self, force: bool = False, final: bool = False) -> None:
        if not self.enabled or (self._closed and not final):
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        line = self.render()
        pad = max(self._last_len - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last_len = len(line)
