"""Spec options: what each backend takes, checked once, and what identifies an embedding space.

A backend declares its options as a tuple of :class:`Option` (an ``options`` attribute on its
encoder class, or on the factory ``BACKENDS`` names); :func:`check_options` refuses, in one
line, an option the backend does not take (naming the closest one and the backend that does
take it) or a value of the wrong type. :func:`space_identity` says what defines a space: the
weights' bytes and the options that change the output, never the weights' path or the order
in which the options were written.

This module imports neither torch nor a backend: stores compare spaces with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ..errors import ModelError, closest

# -- value types -------------------------------------------------------------------------------
# Each parses an option's text (raising ValueError) and words what was wrong with it in
# ``problem``; ``expects`` is what the docs table says.


@dataclass(frozen=True)
class Integer:
    low: int = 1

    @property
    def expects(self) -> str:
        return f"integer >= {self.low}"

    def __call__(self, text: str) -> int:
        value = int(text)
        if value < self.low:
            raise ValueError(self.expects)
        return value

    def problem(self, key: str, text: str) -> str:
        try:
            int(text)
        except ValueError:
            return f"{key} must be an integer, got {text!r}"
        return f"{key} {text} is below the minimum of {self.low}"


@dataclass(frozen=True)
class Number:
    """A finite float in (low, high] (``low_open``) or [low, high]."""

    low: float = 0.0
    high: float | None = None
    low_open: bool = True

    @property
    def expects(self) -> str:
        left = "(" if self.low_open else "["
        return f"number in {left}{self.low:g}, {'inf)' if self.high is None else f'{self.high:g}]'}"

    def __call__(self, text: str) -> float:
        value = float(text)
        if not math.isfinite(value) or value < self.low or (self.low_open and value == self.low) \
                or (self.high is not None and value > self.high):
            raise ValueError(self.expects)
        return value

    def problem(self, key: str, text: str) -> str:
        return f"{key} must be a {self.expects}, got {text!r}"


@dataclass(frozen=True)
class Numbers:
    """Comma-separated numbers, one per channel (``0.5,0.5,0.5``) or one for all."""

    @property
    def expects(self) -> str:
        return "1 or 3 numbers (0.5,0.5,0.5)"

    def __call__(self, text: str) -> tuple[float, ...]:
        values = tuple(float(part) for part in text.split(","))
        if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
            raise ValueError(self.expects)
        return values * 3 if len(values) == 1 else values

    def problem(self, key: str, text: str) -> str:
        return f"{key} must be one number or three, comma-separated (0.5,0.5,0.5), got {text!r}"


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]
    unknown_first: bool = False  # "unknown interpolation 'x'" rather than "pooling 'x' unknown"

    @property
    def expects(self) -> str:
        return "|".join(self.values)

    def __call__(self, text: str) -> str:
        if text not in self.values:
            raise ValueError(self.expects)
        return text

    def problem(self, key: str, text: str) -> str:
        what = f"unknown {key} {text!r}" if self.unknown_first else f"{key} {text!r} unknown"
        return f"{what}: use one of {', '.join(self.values)}"


@dataclass(frozen=True)
class Flag:
    @property
    def expects(self) -> str:
        return "1 or 0"

    def __call__(self, text: str) -> bool:
        low = text.lower()
        if low not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(self.expects)
        return low in ("1", "true", "yes")

    def problem(self, key: str, text: str) -> str:
        return f"{key} must be 1 or 0 (true/false, yes/no), got {text!r}"


@dataclass(frozen=True)
class Text:
    what: str = "text"

    @property
    def expects(self) -> str:
        return self.what

    def __call__(self, text: str) -> str:
        if not text.strip():
            raise ValueError(self.expects)
        return text

    def problem(self, key: str, text: str) -> str:
        return f"{key} is empty: give {self.what}"


@dataclass(frozen=True)
class Option:
    """One ``?key=value`` a backend takes.

    ``kind`` parses the text (raising ``ValueError``) and says what it expects; ``what`` is
    what the option does, ``when`` when it matters; ``space`` is False for the options that do
    not change the embeddings given the same weights (the weights' path, permissions).
    """

    name: str
    kind: Callable[[str], Any]
    what: str
    when: str = ""
    space: bool = True

    @property
    def expects(self) -> str:
        return str(getattr(self.kind, "expects", "text"))

    def problem(self, value: str) -> str:
        words = getattr(self.kind, "problem", None)
        return words(self.name, value) if words else f"{self.name}={value!r} is not {self.expects}"


# Options that never change the output once the weights' bytes are known (the hash covers
# them): tests/test_encoder_specs.py checks every backend's ``space=False`` options are these.
OUTPUT_NEUTRAL = frozenset({"weights", "trust_remote_code"})
# Backends whose name is where the weights are (a directory or a hub name), not an
# architecture: with a weights hash the name says nothing more.
NAME_IS_A_PATH = frozenset({"hf", "st"})


# -- parsing -----------------------------------------------------------------------------------


def split_spec(text: str) -> tuple[str, str, list[tuple[str, str]]]:
    """``backend:name?k=v&...`` into its parts, blank values kept (so they can be refused)."""
    backend, sep, rest = text.strip().partition(":")
    if not sep or not rest:
        raise ModelError(f"unknown model spec {text!r}")
    name, _, query = rest.partition("?")
    return backend, name, parse_qsl(query, keep_blank_values=True)


def check_options(spec_text: str, backend: str, pairs: Sequence[tuple[str, str]],
                  declared: Sequence[Option] | None,
                  others: Mapping[str, Sequence[Option]] | None = None) -> dict[str, str]:
    """The options as a dict, after refusing repeats, unknown names and ill-typed values.

    ``declared`` is None for a backend that declares nothing (a plug-in written before
    declarations existed): its options pass unchecked. ``others`` (backend -> options) lets the
    message say which backend takes an option this one does not.
    """
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options:
            raise ModelError(f"model {spec_text!r}: option {key!r} given twice")
        options[key] = value
    if declared is None:
        return options
    known = {opt.name: opt for opt in declared}
    takes = f"{backend} takes {', '.join(sorted(known)) or 'no options'}"
    for key, value in options.items():
        opt = known.get(key)
        if opt is None:
            close = closest(key, list(known), cutoff=0.6)
            owners = sorted(b for b, opts in (others or {}).items()
                            if b != backend and any(o.name == key for o in opts))
            if close:
                why = f"unknown option {key!r} (did you mean {close!r}?)"
            elif owners:
                why = f"option {key!r} is not taken by {backend} (it is a {'/'.join(owners)} option)"
            else:
                why = f"unknown option {key!r}"
            raise ModelError(f"model {spec_text!r}: {why}; {takes} (docs/encoders.md)")
        try:
            opt.kind(value)
        except ValueError:
            raise ModelError(f"model {spec_text!r}: {opt.problem(value)}; {takes} "
                             "(docs/encoders.md)") from None
    return options


# -- what identifies a space -------------------------------------------------------------------


def _canonical(value: str) -> str:
    """The same number written differently (1e-3, 0.001; 1, 1.0) is the same value."""
    parts = []
    for part in str(value).split(","):
        try:
            number = float(part)
        except ValueError:
            parts.append(part.strip())
        else:
            if not math.isfinite(number):
                parts.append(part.strip())
            else:
                parts.append(str(int(number)) if number.is_integer() else repr(number))
    return ",".join(parts)


def expand(model_spec: str) -> tuple[str, str, dict[str, str]]:
    """Backend, name and options of a spec as a store records it; short names expand to what
    they load (no package is needed: only the card is read). Raises ModelError."""
    from .cards import MODELS

    text = model_spec.strip()
    if text in MODELS:
        card = MODELS[text]
        return card.backend, card.arch, dict(card.options)
    backend, name, pairs = split_spec(text)
    return backend, name, dict(pairs)


def space_identity(model_spec: str | None, weights_sha256: str | None = None) -> dict[str, Any]:
    """What defines an embedding space, as a plain dict: equal dicts, same space.

    With a weights hash: the hash, the backend, the architecture (not for ``hf:``/``st:``,
    whose name is only where the files are) and every option that changes the output, sorted,
    with numbers canonical (``0.001`` = ``1e-3``); not the weights' path. Without a hash, the
    name and all options (order still ignored). A spec that cannot be parsed is its own text.
    """
    sha = weights_sha256 or None
    try:
        backend, name, options = expand(str(model_spec))
    except ModelError:
        return {"model_spec": model_spec, "weights_sha256": sha}
    if sha is not None:
        options = {k: v for k, v in options.items() if k not in OUTPUT_NEUTRAL}
    identity: dict[str, Any] = {"backend": backend}
    if sha is None or backend not in NAME_IS_A_PATH:
        identity["name"] = name
    identity["options"] = {k: _canonical(options[k]) for k in sorted(options)}
    identity["weights_sha256"] = sha
    return identity


def identity_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """The first thing two identities differ in, as words (None: the same space)."""
    if a == b:
        return None
    if "model_spec" in a or "model_spec" in b:
        if a.get("model_spec") != b.get("model_spec"):
            return "model_spec differs"
        return "weights_sha256 differs"
    if a.get("weights_sha256") != b.get("weights_sha256"):
        short = [str(x.get("weights_sha256") or "none")[:12] for x in (a, b)]
        return f"weights_sha256 differs: {short[0]}… vs {short[1]}…"
    for key in ("backend", "name"):
        if a.get(key) != b.get(key):
            return f"{key} differs: {a.get(key)} vs {b.get(key)}"
    oa, ob = a.get("options", {}), b.get("options", {})
    for key in sorted(set(oa) | set(ob)):
        if oa.get(key) != ob.get(key):
            return f"option {key} differs: {oa.get(key, 'unset')} vs {ob.get(key, 'unset')}"
    return "model_spec differs"
