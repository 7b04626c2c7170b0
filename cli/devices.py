"""`--device`: checked when parsed, the same way in every command that runs torch."""

from __future__ import annotations

import click


def _checked(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from stitchkit.devices import check_device

    return check_device(value)  # a misspelling is one line (exit 2) before any work starts


#: ``extra`` of a generated ``device`` setting (cli/settings.py): checked when parsed.
DEVICE_PARSING = {"callback": _checked, "metavar": "auto|cpu|cuda[:N]"}
