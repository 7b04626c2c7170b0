"""A ``.txt`` file: one text per non-blank line, ids the line numbers (from 1)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .registry import InputFormat
from .types import InputOptions, Inputs, Item


def read_lines(path: Path) -> Inputs:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text: one text per line is expected") from exc
    items = [Item(str(n), text=line) for n, line in enumerate(lines, 1) if line.strip()]
    return Inputs(items, "text", str(path), ["text"], kind="textfile")


def _claim(sources: list[str]) -> bool:
    path = Path(sources[0])
    return len(sources) == 1 and path.suffix.lower() == ".txt" and path.exists() and not path.is_dir()


def _read(sources: list[str], options: InputOptions) -> Inputs:
    return read_lines(Path(sources[0]))


FORMAT = InputFormat(
    "textfile", "a .txt file, one text per line; ids are line numbers", "a .txt file",
    claim=_claim, read=_read, ray=True, texts=True,
)
