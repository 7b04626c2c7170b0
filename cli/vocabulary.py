"""One option name for one meaning in every command, and the old names kept for one version.

| meaning                               | option              | commands                                 |
|---------------------------------------|---------------------|------------------------------------------|
| the model that embeds images or texts | ``-m/--model``      | embed                                    |
| the text model (captions, prompts)    | ``-t/--text-model`` | head captions, classify                  |
| only these rows (a file of ids)       | ``--ids FILE``      | embed, fit, sweep, adapt, classify, head |
| replace an output that exists         | ``--overwrite``     | embed, export, import, fit               |
| accept inputs from different spaces   | ``--force-space``   | apply, classify                          |
| a run's name in its record            | ``--name``          | fit, sweep, classify                     |

Old names (``head captions -m``, ``fit/sweep --anchors``, ``apply/classify --force``) still work
for this version, hidden from ``--help``, with one deprecation line on stderr;
tests/test_cli_help.py checks the table against the commands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

#: meaning -> the one option name; tests check every command that has the meaning uses it.
VOCABULARY = {
    "model": "--model",
    "text model": "--text-model",
    "row subset": "--ids",
    "output replacement": "--overwrite",
    "space mismatch": "--force-space",
    "run name": "--name",
}
_EMPTY = (None, False, ())


def deprecated_alias(old: str, new: str, dest: str, **kwargs: Any) -> Callable:
    """A hidden option ``old`` that fills the parameter ``dest`` of the option ``new`` (which
    must take ``callback=take_alias``), with one deprecation line on stderr."""

    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value in _EMPTY:
            return
        click.echo(f"warning: {old} is deprecated and goes in the next version: use {new}", err=True)
        if ctx.params.get(dest) not in _EMPTY:
            raise click.UsageError(f"give {new} only, not also its old name {old}")
        ctx.meta[f"alias:{dest}"] = value

    return click.option(old, f"alias_{dest}", hidden=True, expose_value=False, callback=remember, **kwargs)


def take_alias(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of an option with a deprecated alias: the alias's value when the option is unset."""
    aliased = ctx.meta.pop(f"alias:{param.name}", None)
    if aliased is not None and value not in _EMPTY:
        raise click.UsageError(f"give {param.opts[-1]} only, not also its old name")
    return value if aliased is None else aliased
