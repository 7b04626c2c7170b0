"""`stitch info`: show what any store, map, head, checkpoint, score file or export folder holds."""

from __future__ import annotations

import click

from .output import emit


@click.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(path: str, as_json: bool) -> None:
    """Show what PATH holds: an embedding store (.h5), a map, a head (or its checkpoint), a
    score file of `stitch classify` (.csv or .h5) or a folder of `stitch export`, with the
    code that wrote it (stitchkit's version, and its git commit when run from a checkout). A
    file of a format version this stitchkit does not read is refused in one line.

    \b
    Examples:
      stitch info lite0.h5
      stitch info lite0.h5 --json
      stitch info scores.csv
    """
    from stitchkit.inspect import describe_file

    result = describe_file(path)
    emit(result, as_json=as_json, text=None if as_json else _text(result))


def _text(result: dict) -> str:
    from stitchkit.provenance import describe_code

    lines = []
    for key, value in result.items():
        if key == "code" and (value is None or isinstance(value, dict)):
            lines.append(f"code: {describe_code(value)}")  # 0.1.0 (commit 1a2b3c4d5e6f, dirty)
        elif isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(f"  {k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            lines.append(f"{key}: {len(value)}")
            lines.extend(f"  {item}" for item in value[:10])
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)
