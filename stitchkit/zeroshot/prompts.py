"""Prompts: classes with positive (and negative) sentences, from a file or a class list.

Prompt file (YAML or JSON)::

    mode: multiclass                  # default mode: multiclass | multilabel
    templates: ["There is {finding}."]             # used where a class lists no prompts
    negative_templates: ["There is no {finding}."]
    classes:
      normal:
        labels: [normal, no_finding]  # store labels that mean this class (default: its name)
        positive: ["There is no abnormality.", "The lungs are clear."]
        negative: ["There is an abnormality."]
      pneumonia:
        synonyms: [pneumonia, consolidation, airspace disease]
        # no positive list: templates × synonyms give "There is pneumonia.", ...

The short form ``{class: [prompt, ...]}`` (with or without the ``classes:`` key) is accepted
too. Several prompts per class are averaged. The standardised forms follow CARZero:
"There is {finding}." and "There is no {finding}.".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..anchors import PROMPTS_DIR
from ..errors import UsageError

POSITIVE_TEMPLATE = "There is {finding}."
NEGATIVE_TEMPLATE = "There is no {finding}."
MODES = ("multiclass", "multilabel")
BUILTIN_DIR = PROMPTS_DIR

_TOP_KEYS = {"name", "description", "mode", "templates", "negative_templates", "classes"}
_CLASS_KEYS = {"positive", "negative", "synonyms", "labels", "description"}


class PromptError(UsageError):
    """A prompt file or class list that cannot be used; the message names file and problem."""


@dataclass
class PromptClass:
    name: str
    positive: list[str]
    negative: list[str] = field(default_factory=list)
    synonyms: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def matches(self, label: str) -> bool:
        wanted = {x.lower() for x in (self.labels or [self.name])}
        return any(part.strip().lower() in wanted for part in str(label).split("|"))


@dataclass
class PromptSet:
    classes: list[PromptClass]
    mode: str = "multiclass"
    source: str = "<class list>"

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def texts(self, negatives: bool | None = None) -> list[str]:
        """Every distinct prompt in a stable order; negatives by default in multi-label mode only."""
        if negatives is None:
            negatives = self.mode == "multilabel"
        seen: dict[str, None] = {}
        for c in self.classes:
            for t in (*c.positive, *(c.negative if negatives else ())):
                seen.setdefault(t, None)
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "mode": self.mode,
            "classes": {c.name: {"positive": c.positive, "negative": c.negative,
                                 "labels": c.labels or [c.name]} for c in self.classes},
        }


def finding_phrase(name: str) -> str:
    return name.replace("_", " ").strip().lower()


def _fill(template: str, finding: str, where: str) -> str:
    if "{finding}" not in template:
        raise PromptError(f"{where}: template {template!r} has no {{finding}} placeholder")
    return template.replace("{finding}", finding)


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PromptError(f"{where}: expected a list of non-empty strings, got {value!r}")
    return [v.strip() for v in value]


def from_classes(
    names: list[str],
    *,
    templates: list[str] | None = None,
    negative_templates: list[str] | None = None,
    mode: str = "multiclass",
) -> PromptSet:
    """A prompt set from a class list and templates (standardised forms by default)."""
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise PromptError("classes (--classes) is empty: give class names such as normal,pneumonia")
    data = {
        "mode": mode,
        "templates": templates or [POSITIVE_TEMPLATE],
        "negative_templates": negative_templates or [NEGATIVE_TEMPLATE],
        "classes": {n: {} for n in names},
    }
    return parse_prompts(data, source="<class list>")


def parse_prompts(data: Any, *, source: str) -> PromptSet:
    """Validate a loaded prompt document; every error names ``source`` and the problem."""
    if not isinstance(data, dict) or not data:
        raise PromptError(f"{source}: expected a mapping of classes to prompts, got {type(data).__name__}")
    if "classes" not in data:
        data = {"classes": data}
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise PromptError(
            f"{source}: unknown top-level keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}"
        )
    mode = data.get("mode", "multiclass")
    if mode not in MODES:
        raise PromptError(f"{source}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    templates = _str_list(data.get("templates"), f"{source}: templates") or [POSITIVE_TEMPLATE]
    negatives = _str_list(data.get("negative_templates"), f"{source}: negative_templates") or [
        NEGATIVE_TEMPLATE
    ]
    raw = data["classes"]
    if not isinstance(raw, dict) or not raw:
        raise PromptError(f"{source}: 'classes' must be a non-empty mapping of class name to prompts")
    classes = []
    for name, spec in raw.items():
        where = f"{source}: class {name!r}"
        if not isinstance(name, str) or not name.strip():
            raise PromptError(f"{source}: class names must be non-empty strings, got {name!r}")
        if spec is None:
            spec = {}
        if isinstance(spec, (list, str)):
            spec = {"positive": spec}
        if not isinstance(spec, dict):
            raise PromptError(f"{where}: expected a list of prompts or a mapping, got {spec!r}")
        bad = set(spec) - _CLASS_KEYS
        if bad:
            raise PromptError(f"{where}: unknown keys {sorted(bad)}; allowed: {sorted(_CLASS_KEYS)}")
        synonyms = _str_list(spec.get("synonyms"), f"{where} synonyms") or [finding_phrase(name)]
        positive = _str_list(spec.get("positive"), f"{where} positive")
        if not positive:
            positive = [_fill(t, s, f"{source}: templates") for t in templates for s in synonyms]
        negative = _str_list(spec.get("negative"), f"{where} negative")
        if not negative:
            negative = [_fill(t, s, f"{source}: negative_templates") for t in negatives for s in synonyms]
        labels = _str_list(spec.get("labels"), f"{where} labels")
        classes.append(PromptClass(name.strip(), positive, negative, synonyms, labels))
    names = [c.name.lower() for c in classes]
    if len(set(names)) != len(names):
        raise PromptError(f"{source}: duplicate class names {names}")
    return PromptSet(classes, mode, source)


def resolve_prompt_path(spec: str | os.PathLike) -> Path:
    """A path, or the short name of a curated set in ``anchors/prompts`` (e.g. ``cxr14``)."""
    path = Path(spec)
    if path.exists():
        return path
    for suffix in (".yaml", ".yml", ".json"):
        candidate = BUILTIN_DIR / f"{spec}{suffix}"
        if candidate.exists():
            return candidate
    curated = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml")) if BUILTIN_DIR.is_dir() else []
    raise PromptError(
        f"prompt file {spec}: no such file"
        + (f"; curated sets: {', '.join(curated)}" if curated else "")
    )


def load_prompts(spec: str | os.PathLike, *, mode: str | None = None) -> PromptSet:
    """Read and validate a YAML or JSON prompt file (or a curated set's short name)."""
    path = resolve_prompt_path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PromptError(f"{path} is not UTF-8 text (a binary file?): give a YAML or JSON prompt file") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise PromptError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except Exception as exc:  # yaml.YAMLError; imported lazily
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise PromptError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    prompts = parse_prompts(data, source=str(path))
    if mode is not None:
        if mode not in MODES:
            raise PromptError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        prompts.mode = mode
    return prompts


def check_for_mode(prompts: PromptSet) -> None:
    if prompts.mode == "multiclass" and len(prompts.classes) < 2:
        raise PromptError(
            f"{prompts.source}: multi-class mode needs at least two classes (got "
            f"{prompts.names}); use --mode multilabel to score one finding against its negative"
        )
