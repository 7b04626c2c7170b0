"""A setting declared once: its default, choices, range and help live on one dataclass field.

The library's options objects (:class:`~stitchkit.zeroshot.classify_plan.ClassifyOptions`,
:class:`~stitchkit.head.TrainConfig`, :class:`~stitchkit.maps.AnchorPlan`, ...) declare each field
with :func:`setting`; :func:`check_settings` validates an object against those declarations (one
line per wrong value, before any store is read), and the command line is generated from the same
fields (``cli/settings.py``), so a default, a choice or a help text is written in one place.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Example:
    ...     holdout: float = setting(0.2, "Fraction held out.", within=Range(0.0, 1.0, open_max=True))
    >>> check_settings(Example(holdout=1.0))
    Traceback (most recent call last):
    stitchkit.errors.UsageError: holdout must be in [0.0, 1.0), got 1.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass
from typing import Any

from .errors import UsageError


@dataclass(frozen=True)
class Range:
    """The closed interval [minimum, maximum] (either end optional); ``open_max`` excludes the top."""

    minimum: float | None = None
    maximum: float | None = None
    open_max: bool = False

    def holds(self, value: float) -> bool:
        if self.minimum is not None and value < self.minimum:
            return False
        if self.maximum is None:
            return True
        return value < self.maximum if self.open_max else value <= self.maximum

    def __str__(self) -> str:
        if self.maximum is None:
            return f"≥ {self.minimum}"
        return f"[{self.minimum}, {self.maximum}{')' if self.open_max else ']'}"


@dataclass(frozen=True)
class Spec:
    """What a field declares besides its default (kept in the field's metadata)."""

    help: str
    choices: tuple[str, ...] | None = None
    within: Range | None = None
    none: str | None = None  # the word that stands for None on the command line ("none", "auto")
    shown: str | None = None  # the default as help shows it, where it depends on other settings


def setting(default: Any = MISSING, help: str = "", *, choices: Sequence[str] | None = None,
            within: Range | None = None, none: str | None = None, shown: str | None = None,
            factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its :class:`Spec`; ``factory`` instead of a mutable default."""
    spec = Spec(help=help, choices=tuple(choices) if choices is not None else None, within=within,
                none=none, shown=shown)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"spec": spec})
    return dataclasses.field(default=default, metadata={"spec": spec})


def spec_of(field: dataclasses.Field) -> Spec | None:
    return field.metadata.get("spec")


def declared(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` declared with :func:`setting`, in order."""
    return [f for f in dataclasses.fields(cls) if spec_of(f) is not None]


def default_of(field: dataclasses.Field) -> Any:
    if field.default_factory is not MISSING:
        return field.default_factory()
    return None if field.default is MISSING else field.default


def check_settings(options: Any) -> None:
    """Raise :class:`UsageError` with one line for the first value outside its declared choices
    or range (each item of a list or tuple)."""
    for f in declared(type(options)):
        spec, value = spec_of(f), getattr(options, f.name)
        if value is None or isinstance(value, bool):
            continue
        items = [value] if isinstance(value, str) else value if isinstance(value, list | tuple) else []
        bad = [v for v in items if isinstance(v, str) and v not in (spec.choices or (v,))]
        if bad:
            raise UsageError(f"{f.name} takes {'one' if isinstance(value, str) else 'each'} of "
                             f"{', '.join(spec.choices)}, got {bad[0]!r}")
        if isinstance(value, list | tuple) and not value:
            raise UsageError(f"{f.name} is empty")
        numbers = [v for v in (value if isinstance(value, list | tuple) else [value])
                   if isinstance(v, int | float) and not isinstance(v, bool)]
        for number in numbers:
            if spec.within is not None and not spec.within.holds(number):
                raise UsageError(f"{f.name} must be in {spec.within}, got {number!r}"
                                 if spec.within.maximum is not None else
                                 f"{f.name} must be {spec.within}, got {number!r}")
