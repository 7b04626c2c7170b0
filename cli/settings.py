"""Command-line options generated from the library's settings (:mod:`stitchkit.settings`).

A field ``chunk_size: int = setting(8192, "Query rows per block.")`` becomes
``--chunk-size INTEGER [default: 8192]`` with that help; choices become ``click.Choice``, ranges
``IntRange``/``FloatRange``, a boolean that defaults to True the pair ``--x/--no-x``, a field
whose None has a word (``none="none"``) one more choice (a number takes the word too:
``--workers N|auto``). :func:`settings_options` adds them to a
command and :func:`take_settings` builds the options object back from the parsed values, so the
CLI writes no default, choice or help of its own for a library setting.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import click

from stitchkit.settings import declared, default_of, spec_of


class SettingOption(click.Option):
    """A click option generated from one field of a library options class."""

    def __init__(self, *args: Any, owner: type, field: dataclasses.Field, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner, self.field = owner, field

    @property
    def library_default(self) -> Any:
        """The field's default as the command line spells it (None as its word)."""
        value, spec = default_of(self.field), spec_of(self.field)
        return spec.none if value is None and spec.none is not None else value


class _NumberOrWord(click.ParamType):
    name = "number|word"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return float(value)
        except (TypeError, ValueError):
            return value


class _OrWord(click.ParamType):
    """A number of ``inner`` (its range checked), or the word that stands for None: ``--workers auto``."""

    def __init__(self, inner: click.ParamType, word: str) -> None:
        self.inner, self.word = inner, word
        self.name = f"{inner.name}|{word}"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return f"N|{self.word}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value if value == self.word else self.inner.convert(value, param, ctx)


class _CommaList(click.ParamType):
    """``50,100,250`` → (50, 100, 250): a list setting on the command line."""

    name = "list"

    def __init__(self, item: type, choices: tuple[str, ...] | None) -> None:
        self.item, self.choices = item, choices

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple | list):
            return tuple(value)
        try:
            items = tuple(self.item(v) for v in str(value).replace(" ", "").split(",") if v)
        except ValueError:
            self.fail(f"takes comma-separated {self.item.__name__} values, got {value!r}", param, ctx)
        bad = [v for v in items if self.choices is not None and v not in self.choices]
        if bad or not items:
            self.fail(f"takes comma-separated values among {', '.join(self.choices or ())}, got {value!r}"
                      if bad else "is empty", param, ctx)
        return items


def _sequence_item(annotation: Any) -> type | None:
    origin = typing.get_origin(annotation)
    if origin in (tuple, list, collections.abc.Sequence):
        return typing.get_args(annotation)[0]
    return None


def _base_type(annotation: Any) -> type | tuple[type, ...]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return args[0] if len(args) == 1 else tuple(args)


def _click_type(field: dataclasses.Field, annotation: Any) -> Any:
    spec, base = spec_of(field), _base_type(annotation)
    item = _sequence_item(annotation)
    if item is not None:
        return _CommaList(item, spec.choices)
    if spec.choices is not None:
        return click.Choice([*([spec.none] if spec.none else []), *spec.choices])
    if isinstance(base, tuple):
        if os.PathLike in base:
            return click.Path(dir_okay=False)
        return _NumberOrWord() if float in base else str
    r, number = spec.within, None
    if r is not None and base is int:
        number = click.IntRange(min=r.minimum, max=r.maximum, max_open=r.open_max)
    elif r is not None and base is float:
        number = click.FloatRange(min=r.minimum, max=r.maximum, max_open=r.open_max)
    elif base in (int, float):
        number = click.INT if base is int else click.FLOAT
    if number is not None and spec.none is not None:
        return _OrWord(number, spec.none)
    return number or base


def settings_options(owner: type, *, only: Iterable[str] | None = None, skip: Iterable[str] = (),
                     short: Mapping[str, str] | None = None, suffix: str = "",
                     extra: Mapping[str, Mapping[str, Any]] | None = None) -> Callable[[Any], Any]:
    """Add one option per declared field of ``owner`` (``only`` those, or all but ``skip``) to a
    click command; ``suffix`` names each ``--FIELD-SUFFIX`` where the class is the suffix's
    meaning (``Columns.id`` is ``--id-column``).

    ``short``: field → a short flag (``{"output": "-o"}``); ``extra``: field → more click keyword
    arguments (a callback, a metavar), never a default, a choice or a help text."""
    hints = typing.get_type_hints(owner)
    short, extra, skip = dict(short or {}), dict(extra or {}), set(skip)
    only = set(only) if only is not None else None

    def decorate(command: Any) -> Any:
        for field in reversed(declared(owner)):
            if field.name in skip or only is not None and field.name not in only:
                continue
            command = click.option(*_names(field, hints[field.name], short, suffix), cls=SettingOption, owner=owner, field=field,
                                   **_attributes(field, hints[field.name]), **extra.get(field.name, {}))(command)
        return command

    return decorate


def _names(field: dataclasses.Field, annotation: Any, short: Mapping[str, str], suffix: str) -> list[str]:
    name = field.name + suffix
    flag = "--" + name.replace("_", "-")
    default = default_of(field)
    names = [short[field.name]] if field.name in short else []
    if default is True or default is None and _base_type(annotation) is bool:
        return [*names, f"{flag}/--no-{flag[2:]}", name]
    return [*names, flag, name]


def _attributes(field: dataclasses.Field, annotation: Any) -> dict[str, Any]:
    spec, default = spec_of(field), default_of(field)
    attributes: dict[str, Any] = {"help": spec.help or None}
    if isinstance(default, bool) and not default:
        attributes.update(is_flag=True, default=False)
        return attributes
    attributes["default"] = spec.none if default is None and spec.none is not None else default
    if _sequence_item(annotation) is not None:
        attributes["default"] = ",".join(map(str, default))
        attributes["metavar"] = f"{'|'.join(spec.choices)},..." if spec.choices else "A,B,..."
    if not isinstance(default, bool) and _base_type(annotation) is not bool:
        attributes["type"] = _click_type(field, annotation)
    if spec.shown is not None:
        attributes["show_default"] = spec.shown
    elif default is not None or spec.none is not None:
        attributes["show_default"] = True
    return attributes


def take_settings(owner: type, values: dict[str, Any], suffix: str = "", **more: Any) -> Any:
    """``owner`` built from the parsed values of its generated options (removed from ``values``),
    a word for None turned back into None, plus ``more`` (fields the command sets itself)."""
    kwargs = dict(more)
    for field in declared(owner):
        if field.name + suffix in values:
            value, spec = values.pop(field.name + suffix), spec_of(field)
            kwargs[field.name] = None if spec.none is not None and value == spec.none else value
    return owner(**kwargs)
