"""Output helpers: results go to stdout as text or JSON; warnings and progress to stderr."""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import numpy as np


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def emit(result: dict[str, Any], *, as_json: bool, text: str | None = None) -> None:
    """Print one result: JSON on ``--json``, else ``text`` (or a key: value listing)."""
    for got in _captured:
        got.append((result, _command()))
    if as_json:
        click.echo(json.dumps(result, indent=2, default=_default))
    elif text is not None:
        click.echo(text)
    else:
        for key, value in result.items():
            click.echo(f"{key}: {value}")


def show_warnings() -> None:
    """Library warnings become one plain line each on stderr."""

    def _show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        click.echo(f"warning: {message}", err=True)

    warnings.showwarning = _show


class Progress:
    """A rich bar on a terminal; off a terminal, flushed lines with count, rate and ETA."""

    def __init__(self, description: str, *, every_s: float = 10.0) -> None:
        self.description = description
        self.every_s = every_s
        self.tty = sys.stderr.isatty()
        self.total = 0
        self.done = 0
        self._start_done = 0

    def start(self, total: int, done: int = 0) -> None:
        """Start at ``done`` of ``total``; ``done`` > 0 says an earlier run left that much done
        (only a caller that found its partial output can say so: embed's job)."""
        self._begin(total, done)
        if done and not self.tty:
            click.echo(f"{self.description}: resuming at {done}/{total}", err=True)

    def _begin(self, total: int, done: int) -> None:
        self.total, self.done, self._start_done = total, done, done
        self._t0 = self._last = time.perf_counter()
        if self.tty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=total, completed=done, rate="")

    def advance(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        rate = (self.done - self._start_done) / max(now - self._t0, 1e-9)
        if self.tty:
            self._bar.update(self._task, completed=self.done, rate=f"{rate:.1f}/s")
        elif now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            click.echo(
                f"{self.description}: {self.done}/{self.total} {rate:.1f}/s ETA {eta:.0f}s",
                err=True,
            )
            sys.stderr.flush()

    def update(self, done: int, total: int) -> None:
        """A ``(done, total)`` callback for library functions; the first call starts the bar.

        The first report is the bar's starting point but never a resume: apply, for one, first
        reports after its first chunk of a fresh output, and a callback cannot tell the two apart.
        """
        if not hasattr(self, "_t0"):
            self._begin(total, done)
            if done and not self.tty:  # the count so far, with no rate: its time is unknown
                click.echo(f"{self.description}: {done}/{total}", err=True)
        else:
            self.advance(done - self.done)

    def close(self) -> None:
        if self.tty and hasattr(self, "_bar"):
            self._bar.stop()


@contextmanager
def progress(description: str) -> Iterator[Progress]:
    bar = Progress(description)
    try:
        yield bar
    finally:
        bar.close()


# Results emitted while a capture is open (the demo runs commands in-process and keeps their
# results without parsing what they print).
_captured: list[list[tuple[dict[str, Any], dict[str, Any] | None]]] = []


@contextmanager
def capture() -> Iterator[list[tuple[dict[str, Any], dict[str, Any] | None]]]:
    """Collect (result, command) for every result :func:`emit` prints inside the block."""
    got: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    _captured.append(got)
    try:
        yield got
    finally:
        _captured.remove(got)


def _command() -> dict[str, Any] | None:
    """The running command and its parsed options, for a record's provenance."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    names, c = [], ctx
    while c.parent is not None:  # "stitch head train" however the root was invoked (python -m ...)
        names.append(c.info_name or "")
        c = c.parent
    return {"command": " ".join(["stitch", *reversed(names)]),
            "params": json.loads(json.dumps(ctx.params, default=_default))}


def emit_record(kind: str, result: dict[str, Any], *, as_json: bool, text: str | None = None) -> dict[str, Any]:
    """Emit a command's result as a flat record (stitchkit.results); the text form is unchanged."""
    from stitchkit.results import to_record

    record = to_record(kind, result, command=_command())
    emit(record, as_json=as_json, text=text)
    return record


#: ``--name``: what a run's record calls it (the route column of `stitch results`).
name_option = click.option(
    "--name", default=None, metavar="TEXT",
    help="Name this run in its record: the route column of `stitch results` (default: the route the "
         "record describes, e.g. 'lite0 → lite2 (ridge) + head').")
