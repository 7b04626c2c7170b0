"""Zero-shot benchmark suites: the per-dataset table that zero-shot papers print.

A suite is a YAML file (or the short name of one shipped in ``anchors/suites``: ``papers``,
``demo``) listing data sets; each is scored by :func:`~stitchkit.zeroshot.scoring.classify_store`
through the one composition the command is given (a store's model, optionally a map, a head or
cosine), and measured per finding::

    name: demo
    description: what the suite measures
    datasets:
      - name: nih-findings           # the table's row
        store: nih                   # read from `stitch benchmark ... --store nih=FILE.h5`
        task: multilabel             # multilabel | multiclass
        prompts: cxr14               # a prompt set's short name or file, or several:
                                     #   [cxr14, cxr14-chexzero] or {name: set}: each scored, spread shown
        findings: auto               # a list, or auto: every finding of the prompt set with
        min_positives: 10            #   at least this many positives (and a negative) in the rows
        where: {split: test}         # rows whose store column equals the value (optional)
        ids: nih-test-ids.txt        # rows with these ids (optional)
        within: [Pneumonia]          # rows whose label carries one of these (optional)
        groups: {head: [...], tail: [...]}   # or {rule: positives, head: 1000, medium: 100, tail: 0}

Relative paths (``prompts`` files, ``ids``) are looked up beside the suite file, then in the
current folder. Unknown keys are refused in one line naming the closest allowed key. Before
anything is scored the whole suite is checked (:func:`check_suite`: stores, ids files, the
columns ``where`` selects on, prompt sets, listed findings present) and every problem is
raised at once, one line each.

Store columns: ``labels`` holds findings joined by ``|`` (``No Finding`` where none); a finding
is positive where a prompt class's labels match one of them (as `stitch classify` matches).
``uncertain`` (optional) holds the findings labelled uncertain, joined the same way: such a row
is left out of that finding's AUC only. Multi-class entries keep the rows whose label matches
exactly one class (CheXpert 5x200 style) and add accuracy (argmax over the classes).

Metrics: AUC per finding (scikit-learn's ``roc_auc_score`` on the ranking scores `stitch
classify` writes: logit differences or log-odds), macro AUC (mean over findings), each group's
macro AUC, with percentile bootstrap intervals: every resample draws once and every
finding's AUC is computed under that same draw, so the macro AUC and the group means get
intervals of their own. Where the store has groups (its ``groups`` column: the patient for
``nih:``, a study for DICOM) whole groups are resampled, a patient's images in and out
together (the cluster bootstrap, as `stitch classify`: :mod:`~stitchkit.zeroshot.metrics`);
where it has none, images one by one, and the record says which (``ci.unit``, ``ci.n_groups``;
``bootstrap.units`` in benchmark.json). Neither is stratified by class: a resample without a
positive (or negative) of a finding has no AUC for it and is left out of that finding's
percentiles. Up to :data:`~stitchkit.zeroshot.metrics.EXACT_MAX` images this is the ordinary
bootstrap; above it the bag of little bootstraps with the subsets and Poisson counts `stitch
classify` uses (:func:`~stitchkit.zeroshot.metrics.bootstrap_plan`: subsets of whole groups
where there are groups), so its cost does not grow with N. The control's paired difference
(``--control``) resamples the same units, the same draw for both routes.

Data sets known to share images (RSNA's and SIIM's are ChestX-ray14's), and a model tuned on a
scored set (CARZero on PadChest), are said under the table and in ``shared_data``
(:mod:`stitchkit.inputs.cxr.shared`: each store's data set is the scheme of its ``input``, each
map's and head's the ``input`` of the stores it was fitted on).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..anchors import SUITES_DIR
from ..errors import StitchError, UsageError, closest
from ..fileio import atomic_output, check_writable_dir, read_id_file
from ..provenance import code_provenance
from ..results import BENCHMARK_SCHEMA, append_records, to_record
from ..settings import Range, setting
from ..store import EmbeddingStore
from ..store import format as fmt
from .classify_plan import multilabel_score_setting, scoring_setting
from .metrics import DEFAULT_BOOTSTRAP, auc, group_codes, nanmean, resampled_auc, resampling
from .patches import PatchOptions
from .prompts import PromptClass, PromptSet, load_prompts, resolve_prompt_path

TASKS = ("multilabel", "multiclass")
SUITE_KEYS = ("name", "description", "datasets")
ENTRY_KEYS = ("name", "store", "task", "prompts", "findings", "min_positives", "where", "ids",
              "within", "groups", "description")
UNCERTAIN = "uncertain"  # the store column of findings labelled uncertain, joined by "|"
LEVEL = 0.95


class SuiteError(UsageError):
    """A suite file that cannot be used; the message names the file, the data set and the key."""


# -- the suite ------------------------------------------------------------------------------------
class TooFewFindings(UsageError):
    """An ``auto`` data set whose rows hold too few positives to measure: the suite goes on
    and the table says it was skipped and why."""


@dataclass
class Groups:
    """Findings in named groups: given as lists, or by a rule (``thresholds``: a finding joins
    the first group, highest threshold first, whose threshold its positives reach)."""

    lists: dict[str, list[str]] = field(default_factory=dict)
    thresholds: dict[str, int] = field(default_factory=dict)

    def assign(self, findings: list[str], positives: list[int]) -> dict[str, list[str]]:
        if self.thresholds:
            ordered = sorted(self.thresholds.items(), key=lambda kv: -kv[1])
            out: dict[str, list[str]] = {name: [] for name, _ in ordered}
            for f, n in zip(findings, positives, strict=True):
                name = next((g for g, t in ordered if n >= t), None)
                if name is not None:
                    out[name].append(f)
            return out
        lower = {f.lower(): f for f in findings}
        return {g: [lower[x.lower()] for x in members if x.lower() in lower] for g, members in self.lists.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"rule": "positives", **self.thresholds} if self.thresholds else dict(self.lists)


@dataclass
class Entry:
    """One data set of a suite: which store, which rows, which prompts and findings."""

    name: str
    store: str
    task: str
    prompts: str  # the first prompt set's short name or file: the table's row is scored with it
    findings: list[str] | None = None  # None: auto
    min_positives: int = 10
    where: dict[str, str] = field(default_factory=dict)
    ids: str | None = None
    within: list[str] = field(default_factory=list)
    groups: Groups | None = None
    description: str = ""
    prompt_sets: dict[str, str] = field(default_factory=dict)  # name -> spec, ``prompts`` first

    def prompt_specs(self) -> dict[str, str]:
        """Every prompt set the entry is scored under, by name (the first is ``prompts``)."""
        return self.prompt_sets or {set_name(self.prompts): self.prompts}


def set_name(spec: str) -> str:
    """A prompt set's name in the table: its short name, or its file's name without suffix."""
    return Path(spec).stem if Path(spec).suffix.lower() in (".yaml", ".yml", ".json") else spec


@dataclass
class Suite:
    name: str
    source: str
    entries: list[Entry]
    description: str = ""

    @property
    def folder(self) -> Path:
        return Path(self.source).resolve().parent

    def stores(self) -> list[str]:
        return list(dict.fromkeys(e.store for e in self.entries))


def listed(head: str, problems: list[str]) -> str:
    """Problems as one message: the problem itself when there is one, else a count under
    ``head`` and one line per problem (each standing alone, ``head`` left out)."""
    if len(problems) == 1:
        return problems[0]
    return "\n".join([f"{head}: {len(problems)} problems, nothing was scored:",
                      *(f"  {p.removeprefix(head + ': ')}" for p in problems)])


def _refuse_unknown(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            close = closest(str(key), allowed, cutoff=0.5)
            hint = f"did you mean {close!r}?" if close else f"allowed: {', '.join(allowed)}"
            raise SuiteError(f"{where}: unknown key {key!r} ({hint})")


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise SuiteError(f"{where}: expected a non-empty list of names, got {value!r}")
    return [v.strip() for v in value]


def _groups(value: Any, where: str) -> Groups:
    if not isinstance(value, dict) or not value:
        raise SuiteError(f"{where}: expected a mapping of group names to findings, or a rule, got {value!r}")
    if "rule" not in value:
        return Groups(lists={str(g): _strings(v, f"{where} {g}") for g, v in value.items()})
    if value["rule"] != "positives":
        raise SuiteError(f"{where}: rule must be 'positives' (a group per minimum count), got {value['rule']!r}")
    thresholds = {str(g): v for g, v in value.items() if g != "rule"}
    if not thresholds or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in thresholds.values()):
        raise SuiteError(f"{where}: rule positives needs groups with whole minimum counts, e.g. head: 1000, tail: 0")
    return Groups(thresholds=thresholds)


def _prompt_sets(value: Any, where: str) -> dict[str, str]:
    """``prompts``: one set (a short name or file), a list of them, or a mapping name -> set."""
    if isinstance(value, str) and value.strip():
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        named = [(set_name(v.strip()), v.strip()) for v in value]
    elif isinstance(value, dict) and value and all(isinstance(k, str) and k.strip() and isinstance(v, str)
                                                   and v.strip() for k, v in value.items()):
        named = [(k.strip(), v.strip()) for k, v in value.items()]
    else:
        raise SuiteError(f"{where}: prompts must be a prompt set (a short name such as cxr14, or a file), a list "
                         f"of them, or a mapping of names to them, got {value!r}")
    names = [n for n, _ in named]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SuiteError(f"{where}: prompt set names must be unique; repeated: {', '.join(repeated)} "
                         "(name them: prompts: {carzero: cxr14, mine: my-cxr14.yaml})")
    return dict(named)


def parse_entry(raw: Any, source: str, index: int) -> Entry:
    """One data set of a suite document, validated; errors name the file and the data set."""
    where = f"{source}: datasets[{index}]"
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: expected a mapping with name, store, task, prompts, got {raw!r}")
    if isinstance(raw.get("name"), str):
        where = f"{source}: dataset {raw['name']!r}"
    _refuse_unknown(raw, ENTRY_KEYS, where)
    missing = [k for k in ("name", "store", "task") if not isinstance(raw.get(k), str) or not raw[k].strip()]
    missing += ["prompts"] if not raw.get("prompts") else []
    if missing:
        raise SuiteError(f"{where}: needs {', '.join(missing)} (a non-empty string each; prompts may list several sets)")
    sets = _prompt_sets(raw["prompts"], where)
    if raw["task"] not in TASKS:
        raise SuiteError(f"{where}: task must be one of {', '.join(TASKS)}, got {raw['task']!r}")
    findings = raw.get("findings", "auto")
    findings = None if findings == "auto" else _strings(findings, f"{where} findings")
    if findings is not None and raw["task"] == "multiclass" and len(findings) < 2:
        raise SuiteError(f"{where}: a multiclass task needs at least two findings, got {findings}")
    min_pos = raw.get("min_positives", 10)
    if not isinstance(min_pos, int) or isinstance(min_pos, bool) or min_pos < 1:
        raise SuiteError(f"{where}: min_positives must be a whole number >= 1, got {min_pos!r}")
    rows = raw.get("where") or {}
    if not isinstance(rows, dict) or not all(isinstance(v, str | int | float) for v in rows.values()):
        raise SuiteError(f"{where}: where must map store columns to one value each, e.g. {{split: test}}")
    if raw.get("ids") is not None and not isinstance(raw["ids"], str):
        raise SuiteError(f"{where}: ids must be a file name, got {raw['ids']!r}")
    groups = _groups(raw["groups"], f"{where} groups") if raw.get("groups") is not None else None
    if groups and findings is not None:
        listed = {f.lower() for f in findings}
        stray = [m for members in groups.lists.values() for m in members if m.lower() not in listed]
        if stray:
            raise SuiteError(f"{where}: groups name {', '.join(stray)}, which findings does not list")
    return Entry(
        name=raw["name"].strip(), store=raw["store"].strip(), task=raw["task"], prompts=next(iter(sets.values())),
        findings=findings, min_positives=min_pos, where={str(k): str(v) for k, v in rows.items()},
        ids=raw.get("ids"), within=_strings(raw["within"], f"{where} within") if raw.get("within") else [],
        groups=groups, description=str(raw.get("description") or ""),
        prompt_sets=sets,
    )


def parse_suite(data: Any, *, source: str) -> Suite:
    """Validate a loaded suite document."""
    if not isinstance(data, dict):
        raise SuiteError(f"{source}: expected a mapping with name and datasets, got {type(data).__name__}")
    _refuse_unknown(data, SUITE_KEYS, source)
    raw = data.get("datasets")
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{source}: 'datasets' must be a non-empty list of data sets")
    entries, problems = [], []
    for i, r in enumerate(raw):  # every data set is read, and every bad one named at once
        try:
            entries.append(parse_entry(r, source, i))
        except SuiteError as exc:
            problems.append(str(exc))
    if problems:
        raise SuiteError(listed(source, problems))
    names = [e.name for e in entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SuiteError(f"{source}: data set names must be unique; repeated: {', '.join(repeated)}")
    name = data.get("name") or Path(source).stem
    return Suite(str(name), source, entries, str(data.get("description") or ""))


def resolve_suite_path(spec: str | os.PathLike) -> Path:
    """A path, or the short name of a suite shipped in ``anchors/suites`` (``papers``, ``demo``)."""
    path = Path(spec)
    if path.is_file():
        return path
    for suffix in (".yaml", ".yml"):
        candidate = SUITES_DIR / f"{spec}{suffix}"
        if candidate.is_file():
            return candidate
    shipped = sorted(p.stem for p in SUITES_DIR.glob("*.yaml")) if SUITES_DIR.is_dir() else []
    raise SuiteError(f"suite {spec}: no such file" + (f"; shipped suites: {', '.join(shipped)}" if shipped else ""))


def load_suite(spec: str | os.PathLike) -> Suite:
    """Read and validate a suite file (or a shipped suite's short name)."""
    import yaml

    path = resolve_suite_path(spec)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SuiteError(f"{path} is not UTF-8 text: give a YAML suite file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise SuiteError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    return parse_suite(data, source=str(path))


def suite_file(suite: Suite, name: str, what: str) -> Path:
    """A path named in a suite: beside the suite file, else from the current folder."""
    for candidate in (suite.folder / name, Path(name)):
        if candidate.is_file():
            return candidate
    raise SuiteError(f"{suite.source}: {what} {name}: no such file beside the suite or in the current folder")


# -- rows, truth, findings ------------------------------------------------------------------------
def _parts_match(values: np.ndarray, wanted: list[str]) -> np.ndarray:
    """Per distinct label value: whether one of its ``|`` parts is one of ``wanted``."""
    lower = {w.lower() for w in wanted}
    return np.array([any(p.strip().lower() in lower for p in str(v).split("|")) for v in values], dtype=bool)


def select_rows(store: EmbeddingStore, entry: Entry, suite: Suite) -> np.ndarray:
    """The store rows an entry measures (sorted): ``where``, ``ids`` and ``within`` together."""
    rows, problems = rows_and_problems(store, entry, suite)
    if problems:
        raise UsageError(f"dataset {entry.name}: {problems[0]}")
    return rows


#: Where a store column that ``where`` selects on comes from, when the store lacks it or it is empty.
COLUMN_HINTS = {
    "split": "the dataset readers write the official split (`stitch datasets NAME` says which files "
             "hold it, e.g. NIH's train_val_list.txt and test_list.txt beside the images): put them "
             "there and embed again, or drop the condition",
}


def _column_hint(column: str) -> str:
    return COLUMN_HINTS.get(column, f"embed it with a reader that writes {column} "
                                    "(`stitch datasets` lists them), or drop the condition")


def rows_and_problems(store: EmbeddingStore, entry: Entry, suite: Suite) -> tuple[np.ndarray, list[str]]:
    """The rows ``where``, ``ids`` and ``within`` select, and every reason they cannot be
    chosen (a column the store lacks, a value no row holds, an ids file missing or naming
    ids the store lacks, no row left), each in one line."""
    keep = np.ones(len(store), dtype=bool)
    problems = []
    for column, value in entry.where.items():
        coded = store.column_codes(column)
        if coded is None:
            problems.append(f"where {column}={value}, but store {store.path} has no column {column!r}: "
                            + _column_hint(column))
            continue
        values, codes = coded
        held = sorted({str(v) for v in values[np.unique(codes)]})
        if value not in held and held == [""]:
            problems.append(f"where {column}={value}: the {column} column of store {store.path} is empty "
                            f"(its images were read without one): {_column_hint(column)}")
        elif value not in held:
            shown = ", ".join(repr(v) for v in held[:8]) + (", …" if len(held) > 8 else "")
            problems.append(f"where {column}={value}: no row of store {store.path} has it "
                            f"(its {column} values: {shown}): check the value against the store (`stitch info`)")
        keep &= (values == value)[codes]
    if entry.ids:
        try:
            found = suite_file(suite, entry.ids, "ids")
        except SuiteError:
            problems.append(f"ids {entry.ids}: no such file beside the suite ({suite.folder}) or in the current "
                            f"folder ({Path.cwd()}): run from the folder that holds it, or write its path into a copy of the suite")
        else:
            try:
                chosen = np.zeros(len(store), dtype=bool)
                chosen[store.index_of(read_id_file(found))] = True
                keep &= chosen
            except UsageError as exc:
                problems.append(f"ids {entry.ids}: {exc}")
    if entry.within:
        coded = store.column_codes(fmt.LABELS)
        if coded is None:
            problems.append(f"within needs labels, but store {store.path} has none")
        else:
            keep &= _parts_match(coded[0], entry.within)[coded[1]]
    rows = np.flatnonzero(keep)
    if not problems and not len(rows):
        problems.append(f"no row of store {store.path} is selected by {_selection(entry)}: check the "
                        "conditions against the store (`stitch info`)")
    return rows, problems


def _selection(entry: Entry) -> str:
    parts = [f"{k}={v}" for k, v in entry.where.items()]
    parts += [f"ids {entry.ids}"] if entry.ids else []
    parts += [f"within {'|'.join(entry.within)}"] if entry.within else []
    return ", ".join(parts) or "all rows"


def truth_table(values: np.ndarray, classes: list[PromptClass]) -> np.ndarray:
    """(values, classes) bool: ``PromptClass.matches`` of every distinct value (one of its ``|``
    parts, stripped and lower-cased, is one of the class's labels), with each value split once."""
    wanted = [{x.lower() for x in (c.labels or [c.name])} for c in classes]
    parts = [{p.strip().lower() for p in str(v).split("|")} for v in values]
    return np.array([[not w.isdisjoint(p) for w in wanted] for p in parts], dtype=bool).reshape(len(values), len(classes))


def column_truth(store: EmbeddingStore, column: str, rows: np.ndarray, classes: list[PromptClass]) -> np.ndarray | None:
    """(rows, classes) bool: each class's labels match a ``|`` part of the column; None if absent."""
    coded = store.column_codes(column)
    if coded is None:
        return None
    values, codes = coded
    return truth_table(values, classes)[codes[rows]]


def _resolve_class(prompts: PromptSet, name: str, entry: Entry) -> PromptClass:
    key = name.lower()
    for c in prompts.classes:
        if c.name.lower() == key or key in {x.lower() for x in c.labels}:
            return c
    close = closest(name, prompts.names, cutoff=0.5)
    raise SuiteError(f"dataset {entry.name}: finding {name!r} is no class of prompts {entry.prompts}"
                     + (f" (did you mean {close!r}?)" if close else f" (its classes: {', '.join(prompts.names)})"))


@dataclass
class Selection:
    """What one entry scores: its rows, its prompt classes (named as the suite names them), and
    their truth and uncertainty over the rows."""

    rows: np.ndarray
    classes: list[PromptClass]
    truth: np.ndarray  # (rows, classes) bool
    uncertain: np.ndarray  # (rows, classes) bool: left out of that finding's AUC
    clusters: np.ndarray | None = None  # (rows,) int: the store's groups (patients), what the bootstrap draws


def select(store: EmbeddingStore, entry: Entry, suite: Suite, prompts: PromptSet) -> Selection:
    """Rows and findings of an entry: the findings listed, or every class of the prompts with at
    least ``min_positives`` positives and one negative among the rows (``auto``)."""
    rows = select_rows(store, entry, suite)
    if entry.findings is None:
        classes = prompts.classes
    else:
        classes = [PromptClass(f, c.positive, c.negative, c.synonyms, c.labels or [c.name])
                   for f in entry.findings for c in [_resolve_class(prompts, f, entry)]]
    truth = column_truth(store, fmt.LABELS, rows, classes)
    if truth is None:
        raise UsageError(f"dataset {entry.name}: store {store.path} has no labels to measure against")
    unsure = column_truth(store, UNCERTAIN, rows, classes)
    unsure = np.zeros_like(truth) if unsure is None else unsure
    if entry.findings is None:
        pos, neg = (truth & ~unsure).sum(0), (~truth & ~unsure).sum(0)
        keep = np.flatnonzero((pos >= entry.min_positives) & (neg >= 1))
        if (entry.task == "multiclass" and len(keep) < 2) or not len(keep):
            raise TooFewFindings(f"too few findings of prompts {entry.prompts} have {entry.min_positives} "
                                 f"positives among the {len(rows)} rows ({_selection(entry)})")
        classes = [classes[i] for i in keep]
        truth, unsure = truth[:, keep], unsure[:, keep]
    if entry.task == "multiclass":  # rows with exactly one class, none of it uncertain
        single = (truth.sum(1) == 1) & ~(unsure & truth).any(1)
        rows, truth = rows[single], truth[single]
        unsure = np.zeros_like(truth)
    return Selection(rows, classes, truth, unsure, row_clusters(store, rows))


def row_clusters(store: EmbeddingStore, rows: np.ndarray) -> np.ndarray | None:
    """The store's groups of ``rows`` as codes (:func:`~stitchkit.zeroshot.metrics.group_codes`),
    or None where the store has no groups column: the bootstrap then resamples images."""
    found = store.groups
    return None if found is None else group_codes(found[rows])


# -- metrics --------------------------------------------------------------------------------------
@dataclass
class EntryScores:
    """One entry's per-image scores beside their truth, as the metrics read them."""

    truth: np.ndarray  # (n, C) bool
    valid: np.ndarray  # (n, C) bool: the rows each finding's AUC counts (not uncertain)
    ranking: np.ndarray  # (n, C): what AUC ranks by
    probs: np.ndarray  # (n, C): what accuracy's argmax reads
    task: str
    clusters: np.ndarray | None = None  # (n,) int: each image's group (patient); None: images resampled


def _interval(draws: np.ndarray, level: float = LEVEL) -> list[float] | None:
    v = np.asarray(draws, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return None
    return [float(np.percentile(v, 100 * (1 - level) / 2)), float(np.percentile(v, 100 * (1 + level) / 2))]


def _under_weights(scores: EntryScores, rows: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function from weights (r, len(rows)) over the images ``rows`` to every resample's
    statistics (r, K): each finding's AUC over its rows that are not uncertain, then accuracy
    (multi-class). The scores are sorted once, here."""
    per_class = []
    for c in range(scores.truth.shape[1]):
        keep = np.flatnonzero(scores.valid[rows, c])
        per_class.append((keep, resampled_auc(scores.truth[rows[keep], c], scores.ranking[rows[keep], c])))
    correct = None
    if scores.task == "multiclass":
        correct = (scores.probs[rows].argmax(1) == scores.truth[rows].argmax(1)).astype(np.float64)

    def stats(weights: np.ndarray) -> np.ndarray:
        cols = [under(weights if len(keep) == len(rows) else weights[:, keep]) for keep, under in per_class]
        if correct is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                cols.append(np.einsum("rb,b->r", weights, correct) / weights.sum(1, dtype=np.float64))
        return np.stack(cols, axis=1)

    return stats


@dataclass
class Draws:
    """Bootstrap draws of every statistic (columns: each finding's AUC, then accuracy), per
    subset of the bag of little bootstraps (one subset of all images: the ordinary bootstrap),
    each with the subset's own estimate."""

    parts: list[tuple[np.ndarray, np.ndarray]]  # (draws (r, K), own estimate (K,)) per subset
    n_boot: int
    method: str
    unit: dict[str, Any] = field(default_factory=lambda: {"unit": "image", "n_groups": None})  # Resampling.record

    def interval(self, stat: Callable[[np.ndarray], np.ndarray], point: float | None) -> list[float] | None:
        """Percentile interval of ``stat`` (rows of statistics -> one value per row) around
        ``point``: each subset's spread of draws about its own estimate, averaged over subsets."""
        if point is None or not np.isfinite(point):
            return None
        found = [_interval(stat(d) - stat(own[None, :])[0]) for d, own in self.parts]
        ok = [f for f in found if f is not None]
        if not ok:
            return None
        return [float(point + np.mean([f[0] for f in ok])), float(point + np.mean([f[1] for f in ok]))]


def bootstrap_draws(scores: EntryScores, n_boot: int, seed: int) -> Draws:
    """Every finding's AUC (and accuracy) under the same resamples: of whole groups where
    ``scores.clusters`` has them, else of images; the ordinary bootstrap up to EXACT_MAX images,
    the bag of little bootstraps above (as `stitch classify`: :func:`.metrics.resampling`; the
    ordinary bootstrap of images draws its counts as a bincount, cheaper than a multinomial)."""
    n = len(scores.truth)
    rng = np.random.default_rng(seed)
    design = resampling(rng, n, n_boot, groups=scores.clusters, exact_draw="bincount")
    parts = []
    for k, rows in enumerate(design.rows):
        b = len(rows)
        block = int(np.clip((1 << 18) // max(b, 1), 16, 256))  # resamples at once: (block, b) arrays of ~1 MB
        stats = _under_weights(scores, rows)
        draws = []
        for a in range(0, design.per_sub, block):
            draws.append(stats(design.weights(rng, k, min(block, design.per_sub - a))))
        parts.append((np.concatenate(draws), stats(np.ones((1, b), dtype=np.float32))[0]))
    together = ("each group's images drawn together" if design.unit == "group" else
                "images drawn one by one: the store has no groups, so a patient's images are not kept together")
    return Draws(parts, design.n_boot, f"{design.describe('images', over=True)}; the same resamples for "
                 f"every finding; {together}", design.record())


def entry_metrics(scores: EntryScores, findings: list[str], groups: dict[str, list[str]],
                  n_boot: int, seed: int) -> dict[str, Any]:
    """AUC per finding and macro, group macros, accuracy (multi-class), with intervals."""
    n_cls = len(findings)
    cols = [(scores.truth[scores.valid[:, c], c], scores.ranking[scores.valid[:, c], c]) for c in range(n_cls)]
    aucs = [auc(y, s) for y, s in cols]
    index = {f: i for i, f in enumerate(findings)}
    out: dict[str, Any] = {
        "n": int(len(scores.truth)),
        "positives": {f: int(y.sum()) for f, (y, _) in zip(findings, cols, strict=True)},
        "n_rows": {f: int(len(y)) for f, (y, _) in zip(findings, cols, strict=True)},
        "uncertain": {f: int((~scores.valid[:, c]).sum()) for c, f in enumerate(findings)},
        "auc": dict(zip(findings, aucs, strict=True)),
        "auc_macro": nanmean(aucs),
        "groups": {g: {"findings": m, "auc_macro": nanmean([aucs[index[f]] for f in m]) if m else None}
                   for g, m in groups.items()},
    }
    if scores.task == "multiclass":
        out["accuracy"] = float((scores.probs.argmax(1) == scores.truth.argmax(1)).mean())
    if n_boot <= 0 or len(scores.truth) < 2:
        return out
    draws = bootstrap_draws(scores, n_boot, seed)
    ci: dict[str, Any] = {
        "level": LEVEL, "n_boot": draws.n_boot, "method": draws.method, **draws.unit,
        "auc": {f: draws.interval(lambda a, c=c: a[:, c], aucs[c]) for c, f in enumerate(findings)},
        "auc_macro": draws.interval(lambda a: nanmean(a[:, :n_cls], axis=1), out["auc_macro"]),
    }
    for info in out["groups"].values():
        idx = [index[f] for f in info["findings"]]
        info["ci"] = draws.interval(lambda a, idx=idx: nanmean(a[:, idx], axis=1), info["auc_macro"]) if idx else None
    if "accuracy" in out:
        ci["accuracy"] = draws.interval(lambda a: a[:, n_cls], out["accuracy"])
    out["ci"] = ci
    return out


# -- running a suite ------------------------------------------------------------------------------
@dataclass
class Route:
    """How every data set is scored: what `stitch classify` takes besides prompts and rows."""

    text_model: str | None = None
    map_path: str | None = None
    head_path: str | list[str] | None = None
    prompt_store: str | None = None  # prompt embeddings read from (or written to) this store
    scoring: str | None = scoring_setting()
    multilabel_score: str = multilabel_score_setting()
    patch: PatchOptions = field(default_factory=PatchOptions)  # --scoring patch: how tokens are pooled
    adapt: dict[str, str] = field(default_factory=dict)  # store name -> its domain's adaptation map
    allow_overlap: bool = setting(
        False, "Score a data set's rows that trained the head, or whose patients' images did (counted in "
        "its record); without it such rows stop the run (exit 2), as in `stitch classify`.")


@dataclass
class BenchmarkOptions:
    """How a suite is run, besides its route."""

    bootstrap: int = setting(DEFAULT_BOOTSTRAP, "Bootstrap resamples for the 95 % intervals, of whole groups "
                             "(patients) where the store has groups, else of images (0: none).",
                             within=Range(0))
    seed: int = setting(0, "Seed of the bootstrap.")
    datasets: list[str] = field(default_factory=list)  # run only these entries (all when empty)
    command: dict[str, Any] | None = None  # provenance of the records (the CLI's command line)
    on_entry: Callable[[str, int, int], None] | None = None  # (name, index, count) before each
    control: str | os.PathLike | None = None  # the control route's benchmark folder: paired differences


def store_problems(suite: Suite, stores: dict[str, str], names: list[str],
                   route_adapt: dict[str, str] | None = None) -> tuple[list[Entry], list[str]]:
    """The entries to run, and every problem with the data sets and stores asked for: an
    unknown --dataset, a --store or --adapt name the suite does not read, a store it needs
    but was not given."""
    problems = []
    unknown = [n for n in names if n not in {e.name for e in suite.entries}]
    problems += [f"--dataset {n}: suite {suite.name} has no such data set "
                 f"(its data sets: {', '.join(e.name for e in suite.entries)})" for n in unknown]
    entries = [e for e in suite.entries if not names or e.name in names]
    unadapted = sorted(set(route_adapt or {}) - set(suite.stores()))
    problems += [f"--adapt {n}=...: suite {suite.name} reads no store named {n} "
                 f"(its stores: {', '.join(suite.stores())})" for n in unadapted]
    extra = sorted(set(stores) - set(suite.stores()))
    problems += [f"--store {n}=...: suite {suite.name} reads no store named {n} "
                 f"(its stores: {', '.join(suite.stores())})" for n in extra]
    missing = list(dict.fromkeys(e.store for e in entries if e.store not in stores))
    if missing:
        used = ", ".join(f"{e.name} ({e.store})" for e in entries if e.store in missing)
        problems.append(f"suite {suite.name} needs --store {missing[0]}=FILE.h5"
                        + (f" and {', '.join(m + '=...' for m in missing[1:])}" if missing[1:] else "")
                        + f" for {used}; or choose data sets with --dataset")
    return entries, problems


def check_stores(suite: Suite, stores: dict[str, str], names: list[str],
                 route_adapt: dict[str, str] | None = None) -> list[Entry]:
    """The entries to run; the stores and data sets asked for that do not fit the suite are
    refused, one line each."""
    entries, problems = store_problems(suite, stores, names, route_adapt)
    if problems:
        raise UsageError(listed(f"suite {suite.name}", problems))
    return entries


def entry_problems(entry: Entry, job: SuiteJob) -> list[str]:
    """Everything that would stop ``entry`` once scoring began, found without scoring: its
    prompt sets (each read, each listed finding a class of each, each set scoring the first
    set's findings), its rows (``rows_and_problems``), its labels and, for listed findings,
    a positive among the rows. The store is open already (``check_suite``)."""
    problems, sets = [], {}
    for name, spec in entry.prompt_specs().items():
        try:
            sets[name] = job.prompt_set(spec, entry.task)
        except UsageError as exc:
            problems.append(f"prompts {name}: {exc}")
    first = sets.get(next(iter(entry.prompt_specs())))
    classes: list[PromptClass] = []
    if first is not None:
        for f in entry.findings or []:
            try:
                classes.append(_resolve_class(first, f, entry))
            except SuiteError as exc:
                problems.append(str(exc).removeprefix(f"dataset {entry.name}: "))
        wanted = ([PromptClass(f, c.positive, c.negative, c.synonyms, c.labels or [c.name])
                   for f, c in zip(entry.findings, classes, strict=True)]
                  if entry.findings and len(classes) == len(entry.findings) else
                  first.classes if entry.findings is None else [])
        for name, other in list(sets.items())[1:]:
            lacking = [c.name for c in wanted if counterpart(other, c) is None]
            if lacking:
                problems.append(f"prompts {name} ({other.source}) have no class for {', '.join(lacking)} "
                                f"(a class of the same name, or with one of its labels, is needed)")
    store = job._open.get(entry.store)
    if store is None:
        return problems
    rows, found = rows_and_problems(store, entry, job.suite)
    problems += found
    if store.column_codes(fmt.LABELS) is None:
        problems.append(f"store {store.path} has no labels to measure against: embed it with a reader that "
                        "writes labels (a dataset spec, or a manifest's label column)")
    elif not found and entry.findings and len(classes) == len(entry.findings):
        truth = column_truth(store, fmt.LABELS, rows, [PromptClass(f, [], labels=c.labels or [c.name])
                                                       for f, c in zip(entry.findings, classes, strict=True)])
        absent = [f for f, n in zip(entry.findings, truth.sum(0), strict=True) if n == 0]
        if absent:
            problems.append(f"no row among the {len(rows)} selected ({_selection(entry)}) carries "
                            f"{', '.join(absent)}: check the findings against the store's labels (`stitch info`)")
    return problems


def check_suite(job: SuiteJob, names: list[str]) -> list[Entry]:
    """The whole suite checked before anything is scored: the data sets and stores asked for,
    every store opened, then each data set's prompt sets, rows and findings
    (:func:`entry_problems`). Every problem is one line and all of them are raised at once,
    so one run tells everything to mend; the entries to run otherwise."""
    suite = job.suite
    entries, problems = store_problems(suite, job.stores, names, job.route.adapt)
    for name in dict.fromkeys(e.store for e in entries if e.store in job.stores):
        try:
            job.store(name)
        except (UsageError, StitchError, OSError) as exc:
            problems.append(f"store {name}: {exc}")
    for entry in entries:
        problems += [f"dataset {entry.name}: {p}" for p in entry_problems(entry, job)]
    if problems:
        raise SuiteError(listed(f"suite {suite.name} ({suite.source})", problems))
    return entries


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)


@dataclass
class SuiteJob:
    """One run of a suite: the stores by name, the route, the output folder and the options."""

    suite: Suite
    stores: dict[str, str]
    route: Route
    out: Path
    options: BenchmarkOptions
    _prompts: dict[str, PromptSet] = field(default_factory=dict)
    _open: dict[str, EmbeddingStore] = field(default_factory=dict)

    def prompt_set(self, spec: str, task: str) -> PromptSet:
        """A prompt set (short name or file, beside the suite first) in ``task``'s mode, each
        file read once per run."""
        if spec not in self._prompts:
            self._prompts[spec] = load_prompts(resolve_prompt_path(_prompt_spec(spec, self.suite)))
        found = self._prompts[spec]
        return PromptSet(found.classes, task, found.source)

    def prompts(self, entry: Entry) -> PromptSet:
        """The entry's first prompt set (its table row's) in its task's mode."""
        return self.prompt_set(entry.prompts, entry.task)

    def store(self, name: str) -> EmbeddingStore:
        """The store given as ``name``, opened once per run (its columns are read once)."""
        if name not in self._open:
            self._open[name] = EmbeddingStore(self.stores[name])
        return self._open[name]

    def close(self) -> None:
        for store in self._open.values():
            store.close()
        self._open.clear()


def counterpart(prompts: PromptSet, finding: PromptClass) -> PromptClass | None:
    """The class of another prompt set that scores ``finding``: the same name, else a label in
    common (case ignored); None when the set has none."""
    key, labels = finding.name.lower(), {x.lower() for x in (finding.labels or [finding.name])}
    for c in prompts.classes:
        if c.name.lower() == key or key in {x.lower() for x in c.labels}:
            return c
    for c in prompts.classes:
        if labels & {x.lower() for x in (c.labels or [c.name])}:
            return c
    return None


def _scored_as(prompts: PromptSet, chosen: list[PromptClass]) -> list[PromptClass]:
    """``chosen`` (named and labelled as the first set has them) with another set's sentences."""
    out = []
    for c in chosen:
        other = counterpart(prompts, c)
        if other is None:  # the suite check refuses this before anything is scored
            raise SuiteError(f"prompts {prompts.source} have no class for finding {c.name}")
        out.append(PromptClass(c.name, other.positive, other.negative, other.synonyms, c.labels))
    return out


def _score(entry: Entry, job: SuiteJob, ids: list[str], prompts: PromptSet, path: Path
           ) -> tuple[Any, np.ndarray, np.ndarray, float]:
    """`stitch classify` of the rows ``ids`` under ``prompts``, into ``path``: its result, the
    ranking and probabilities in the order of ``ids``, and the seconds it took."""
    from ..fitted_on import OverlapError
    from .score_writer import read_scores
    from .scoring import classify_store

    route = job.route
    t0 = time.perf_counter()
    try:
        result = classify_store(job.store(entry.store), prompts,
                                text_model=route.text_model, prompt_store=route.prompt_store,
                                map_path=route.map_path, head_path=route.head_path, scoring=route.scoring,
                                adapt_path=route.adapt.get(entry.store),
                                output=path, ids=ids, bootstrap=0, allow_missing_classes=True,
                                multilabel_score=route.multilabel_score, patch=route.patch,
                                allow_overlap=route.allow_overlap)
    except OverlapError as exc:  # the same check as `stitch classify`, the suite's way to fix it
        raise OverlapError(f"data set {entry.name}: {exc.line}; select held-out rows with the entry's ids or "
                           "where in the suite, or pass --allow-overlap", line=exc.line) from None
    seconds = time.perf_counter() - t0
    sf = read_scores(path)
    order = np.arange(len(ids)) if sf.ids == ids else np.array([{i: k for k, i in enumerate(sf.ids)}[i] for i in ids])
    return result, sf.ranking[order], sf.probabilities[order], seconds


def run_entry(entry: Entry, job: SuiteJob) -> dict[str, Any]:
    """Score one data set through the job's route under each of its prompt sets and measure
    it; the per-image scores stay in ``out/scores/NAME.h5`` (the first prompt set) and
    ``out/scores/NAME.SET.h5`` (the others)."""
    from ..inputs.cxr.shared import dataset_of

    prompts = job.prompts(entry)
    store = job.store(entry.store)
    chosen = select(store, entry, job.suite, prompts)
    ids = [str(i) for i in store.ids_at(chosen.rows)]
    names = [c.name for c in chosen.classes]
    positives = [int(x) for x in (chosen.truth & ~chosen.uncertain).sum(0)]
    groups = entry.groups.assign(names, positives) if entry.groups else {}
    (job.out / "scores").mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}
    for k, (set_label, spec) in enumerate(entry.prompt_specs().items()):
        pset = prompts if k == 0 else job.prompt_set(spec, entry.task)
        classes = chosen.classes if k == 0 else _scored_as(pset, chosen.classes)
        path = job.out / "scores" / (f"{_slug(entry.name)}.h5" if k == 0 else f"{_slug(entry.name)}.{_slug(set_label)}.h5")
        result, ranking, probs, seconds = _score(entry, job, ids, PromptSet(classes, entry.task, pset.source), path)
        scores = EntryScores(chosen.truth, ~chosen.uncertain, ranking, probs, entry.task, chosen.clusters)
        runs[set_label] = {"prompts": pset.source, "scores": scores, "path": path, "result": result, "seconds": seconds,
                           "metrics": entry_metrics(scores, names, groups, job.options.bootstrap, job.options.seed)}
    first = next(iter(runs.values()))
    metrics, result = first["metrics"], first["result"]
    if job.options.control is not None:
        metrics.update(control_metrics(first["scores"], ids, Path(job.options.control) / "scores" / first["path"].name,
                                       job.options))
    out = {"name": entry.name, "store": entry.store, "store_path": str(job.stores[entry.store]),
           "task": entry.task, "prompts": first["prompts"], "selection": _selection(entry), "findings": names,
           "groups_rule": entry.groups.to_dict() if entry.groups else None, "metrics": metrics,
           "scores": str(first["path"]), "composition": result.composition, "scoring": result.scoring,
           "classify_seconds": sum(r["seconds"] for r in runs.values()),
           "notes": result.notes + _notes(metrics, entry.groups), "overlap": result.overlap,
           "data_source": dataset_of(store.attrs.get("input"))}
    if len(runs) > 1:
        out["prompt_sets"] = {n: {"prompts": r["prompts"], "scores": str(r["path"]), "metrics": r["metrics"]}
                              for n, r in runs.items()}
        out["prompt_spread"] = prompt_spread({n: r["metrics"] for n, r in runs.items()}, names)
    return out


def _spread(values: list[Any]) -> float | None:
    found = [float(v) for v in values if v is not None and np.isfinite(v)]
    return max(found) - min(found) if len(found) > 1 else None


def prompt_spread(by_set: dict[str, dict[str, Any]], findings: list[str]) -> dict[str, Any]:
    """How much the choice of prompt set moves a data set's figures: max − min over the sets
    of the macro AUC, each finding's AUC and accuracy (multi-class), with the sets that gave
    the highest and lowest macro AUC."""
    macro = {n: m["auc_macro"] for n, m in by_set.items()}
    ranked = sorted((v, n) for n, v in macro.items() if v is not None and np.isfinite(v))
    out: dict[str, Any] = {"sets": list(by_set), "auc_macro": _spread(list(macro.values())),
                           "auc": {f: _spread([m["auc"].get(f) for m in by_set.values()]) for f in findings},
                           "highest": ranked[-1][1] if ranked else None, "lowest": ranked[0][1] if ranked else None}
    if all("accuracy" in m for m in by_set.values()):
        out["accuracy"] = _spread([m["accuracy"] for m in by_set.values()])
    return out


def control_metrics(scores: EntryScores, ids: list[str], control: Path, options: BenchmarkOptions) -> dict[str, Any]:
    """The control route's macro AUC on the same images and the paired difference
    (:func:`.compare.paired_macro_difference`), from the control's score file of this data set."""
    from .compare import paired_macro_difference
    from .score_writer import read_scores

    if not control.is_file():
        raise UsageError(f"--control: {control} does not exist; give the folder of a `stitch benchmark` run "
                         "of the control route over the same suite and data sets")
    other = read_scores(control)
    at = {i: k for k, i in enumerate(other.ids)}
    missing = [i for i in ids if i not in at]
    if missing:
        raise UsageError(f"--control: {control} lacks {len(missing)} of this run's images (first: {missing[0]}): "
                         "run the control over the same stores and data sets")
    found = paired_macro_difference(scores.truth, scores.valid, scores.ranking, other.ranking[[at[i] for i in ids]],
                                    n_boot=options.bootstrap, seed=options.seed, groups=scores.clusters)
    out = {"control_auc_macro": found["auc_macro_b"], "delta_auc_macro": found["difference"]}
    if "ci" in found:
        out["delta_auc_macro_ci_low"], out["delta_auc_macro_ci_high"] = found["ci"]["difference"]
    return out


def _prompt_spec(spec: str, suite: Suite) -> str:
    beside = suite.folder / spec
    return str(beside) if beside.is_file() else spec


def _notes(metrics: dict[str, Any], groups: Groups | None) -> list[str]:
    notes = [f"{f}: AUC n/a ({metrics['positives'][f]} positives of {metrics['n_rows'][f]} rows)"
             for f, v in metrics["auc"].items() if v is None or (isinstance(v, float) and math.isnan(v))]
    scored = {f.lower() for f in metrics["auc"]}
    for g, members in (groups.lists.items() if groups else ()):
        left = [m for m in members if m.lower() not in scored]
        if left:
            notes.append(f"group {g}: {', '.join(left)} not scored (too few positives for findings: auto)")
    return notes


def run_suite(suite: Suite, stores: dict[str, str], route: Route, out: str | os.PathLike,
              options: BenchmarkOptions) -> dict[str, Any]:
    """Run every data set of ``suite`` (or ``options.datasets``); write ``out``/benchmark.json,
    table.md and records.json (records appended: `stitch results` reads them). Returns what
    benchmark.json holds."""
    t0 = time.perf_counter()
    out = Path(out)
    job = SuiteJob(suite, stores, route, out, options)
    done, skipped = [], []
    try:
        entries = check_suite(job, options.datasets)
        out.mkdir(parents=True, exist_ok=True)
        check_writable_dir(out)
        for i, entry in enumerate(entries):
            if options.on_entry:
                options.on_entry(entry.name, i, len(entries))
            try:
                done.append(run_entry(entry, job))
            except TooFewFindings as exc:
                skipped.append({"name": entry.name, "why": str(exc)})
    finally:
        job.close()
    if not done:
        raise UsageError("no data set of the suite could be measured: "
                         + "; ".join(f"{s['name']}: {s['why']}" for s in skipped))
    data = {
        "schema": BENCHMARK_SCHEMA, "suite": {"name": suite.name, "source": suite.source, "description": suite.description},
        "composition": _composition(done, stores, route),
        "bootstrap": {"n_boot": options.bootstrap, "seed": options.seed, "level": LEVEL, **bootstrap_units(done)},
        "datasets": done,
        "skipped": skipped,
        "shared_data": shared_notes(done, route),
        "code": code_provenance(),
    }
    for d in done:
        d["shared_data"] = [n["line"] for n in data["shared_data"] if d["name"] in n["entries"]]
    data["seconds"] = {"classify": sum(d["classify_seconds"] for d in done)}
    write_outputs(data, out, options)
    data["seconds"]["total"] = time.perf_counter() - t0
    data = _jsonable(data)  # strict JSON: an AUC that does not exist is null, not NaN
    _write_json(out / "benchmark.json", data)
    return data


def _store_input(path: Any) -> str | None:
    """The ``input`` a store at ``path`` records, where it is still there (else None)."""
    if not path or not Path(path).is_file():
        return None
    try:
        with EmbeddingStore(path) as store:
            return store.attrs.get("input")
    except (StitchError, OSError):
        return None


def fitted_data_sets(route: Route) -> dict[str, list[str]]:
    """The data sets (dataset reader names) the route's map and heads were fitted on, by piece
    (``map NAME``, ``head NAME``): each fitted store's ``input`` as the file records it
    (:mod:`stitchkit.fitted_on`), or as that store records it where a file written before
    holds only its path. Adaptation maps are left out: they are fitted on the scored domain,
    unlabelled, by design."""
    from ..artifacts import read_header
    from ..fitted_on import META_KEY
    from ..inputs.cxr.shared import dataset_of

    heads = route.head_path if isinstance(route.head_path, list) else [route.head_path]
    out: dict[str, list[str]] = {}
    for kind, path in [("map", route.map_path), *(("head", h) for h in heads)]:
        if not path:
            continue
        parts = (read_header(path).get(META_KEY) or {}).get("parts") or []
        found = [dataset_of(p.get("input") or _store_input(p.get("store"))) for p in parts]
        if any(found):
            out[f"{kind} {Path(path).name}"] = list(dict.fromkeys(f for f in found if f))
    return out


def _model_specs(value: Any) -> list[str]:
    """Every ``model_spec`` (and ``source_model_spec``) a composition names, at any depth."""
    if isinstance(value, dict):
        own = [str(v) for k, v in value.items() if k.endswith("model_spec") and isinstance(v, str)]
        return own + [m for v in value.values() for m in _model_specs(v)]
    if isinstance(value, list):
        return [m for v in value for m in _model_specs(v)]
    return []


def shared_notes(done: list[dict[str, Any]], route: Route) -> list[dict[str, Any]]:
    """What the run says of the data it scored (:func:`stitchkit.inputs.cxr.shared.shared_data`):
    scored data sets sharing images, a map or head fitted on a data set sharing images with a
    scored one, a model of the run tuned on a scored set."""
    from ..inputs.cxr.shared import shared_data

    models = [m for d in done for m in _model_specs(d["composition"])] + [route.text_model or ""]
    return shared_data({d["name"]: d.get("data_source") for d in done}, fitted_data_sets(route), models)


def _composition(done: list[dict[str, Any]], stores: dict[str, str], route: Route) -> dict[str, Any]:
    first = done[0]["composition"] if done else {}
    spaces = {d["store"]: (d["composition"].get("query") or {}).get("model_spec") for d in done}
    head = route.head_path if not isinstance(route.head_path, list) else ", ".join(route.head_path)
    return {"stores": {n: {"path": str(stores[n]), "model_spec": spaces.get(n)} for n in stores if n in spaces},
            "map": first.get("map"), "head": str(head) if head else None,
            "adapt": {n: str(p) for n, p in route.adapt.items()} or None,
            "scoring": done[0]["scoring"] if done else route.scoring, "prompts": first.get("prompts"),
            "multilabel_rule": route.multilabel_score, **({"patch": first["patch"]} if first.get("patch") else {})}


# -- outputs --------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")


def records(data: dict[str, Any], command: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One CLIP_benchmark-style record per data set (``stitch results`` reads them)."""
    out = []
    for d in data["datasets"]:
        m = d["metrics"]
        metrics = {k: m[k] for k in ("n", "positives", "auc", "auc_macro", "accuracy") if k in m}
        metrics.update({f"auc_macro_{g}": info["auc_macro"] for g, info in m["groups"].items()})
        ci = dict(m.get("ci") or {})
        ci.pop("method", None)
        ci.update({f"auc_macro_{g}": info["ci"] for g, info in m["groups"].items() if info.get("ci")})
        if d.get("prompt_sets"):  # auc_macro_prompts_<set>, auc_macro_spread, auc_spread_<finding>
            metrics["auc_macro_prompts"] = {n: r["metrics"]["auc_macro"] for n, r in d["prompt_sets"].items()}
            metrics["auc_macro_spread"] = d["prompt_spread"]["auc_macro"]
            metrics["auc_spread"] = d["prompt_spread"]["auc"]
        if ci:
            metrics["ci"] = ci
        result = {"n": m["n"], "classes": d["findings"], "mode": d["task"], "scoring": d["scoring"],
                  "output": d["scores"], "composition": d["composition"], "metrics": _jsonable(metrics),
                  "overlap": d.get("overlap") or {}}
        rec = to_record("classify", result, command=command, dataset=d["name"])
        out.append({**rec, "suite": data["suite"]["name"], "selection": d["selection"],
                    "data_source": d.get("data_source"), "shared_data": "; ".join(d.get("shared_data") or []) or None})
    return out


def write_outputs(data: dict[str, Any], out: Path, options: BenchmarkOptions) -> None:
    """records.json (appended), table.md; ``data`` gains their paths, the table and the model."""
    recs = records(data, options.command)
    data["model"] = recs[0]["model"] if recs else None
    data["markdown"] = table_markdown(data)
    data["records"] = str(append_records(out / "records.json", recs))
    with atomic_output(out / "table.md") as tmp:
        tmp.write_text(data["markdown"], encoding="utf-8")
    data["table"] = str(out / "table.md")


def _cell(value: Any, interval: list[float] | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.3f}"
    return text + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _signed(value: float, interval: list[float] | None) -> str:
    return f"{value:+.3f}" + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else "")


def composition_line(data: dict[str, Any]) -> str:
    """The composition every row of the table was scored through, in one line."""
    comp = data["composition"]
    stores = ", ".join(f"{n} = {Path(s['path']).name} ({s.get('model_spec') or 'model not recorded'})"
                       for n, s in comp["stores"].items())
    mapped = comp.get("map")
    route = (f"map {Path(mapped['path']).name} into {(mapped.get('target') or {}).get('model_spec')}"
             if mapped else "no map")
    scorer = f"head {comp['head']}" if comp.get("head") else "cosine to the prompts"
    if comp.get("multilabel_rule") == "positive":
        scorer += " (multi-label: positive prompts alone)"
    text = (comp.get("prompts") or {}).get("model_spec")
    return (f"Composition: {data.get('model') or '?'} — stores {stores}; {route}; {scorer}"
            + (f"; prompts embedded by {text}" if text else "") + ".")


def _unit(d: dict[str, Any]) -> tuple[str | None, int | None]:
    """(unit, groups) a data set's intervals resampled: ``group`` and how many, or ``image``."""
    ci = d["metrics"].get("ci") or {}
    return ci.get("unit"), ci.get("n_groups")


def bootstrap_units(done: list[dict[str, Any]]) -> dict[str, Any]:
    """benchmark.json's ``bootstrap.unit`` (``group``, ``image``, or ``group where the store has
    groups, else image``; None without a bootstrap) and ``units``: each data set's unit and
    number of groups."""
    units = {d["name"]: dict(zip(("unit", "n_groups"), _unit(d), strict=True)) for d in done if _unit(d)[0]}
    kinds = sorted({u["unit"] for u in units.values()})
    unit = kinds[0] if len(kinds) == 1 else ("group where the store has groups, else image" if kinds else None)
    return {"unit": unit, "units": units}


def _resampled_what(done: list[dict[str, Any]]) -> str:
    """The table's words for what the intervals resampled, per data set where they differ."""
    grouped = [d["name"] for d in done if _unit(d)[0] == "group"]
    alone = [d["name"] for d in done if _unit(d)[0] == "image"]
    whole = ("whole groups, a group's images in or out together (the store's groups column: the patient for nih:; "
             "counted in n groups)")
    single = "images one by one (no groups in the store, so a patient's images are not kept together)"
    if not alone:
        return f"resampling {whole}"
    if not grouped:
        return f"resampling {single}"
    return f"resampling {whole} for {', '.join(grouped)}, and {single} for {', '.join(alone)}"


def prompt_table(done: list[dict[str, Any]]) -> list[str]:
    """Prompt sensitivity, for the data sets scored under several prompt sets: a row per set
    (macro AUC with its interval, accuracy where multi-class, each finding's AUC), then the
    spread (max − min over the sets)."""
    several = [d for d in done if d.get("prompt_sets")]
    if not several:
        return []
    findings = list(dict.fromkeys(f for d in several for f in d["findings"]))
    multiclass = any(d["task"] == "multiclass" for d in several)
    header = ["dataset", "prompts", "macro AUC [95 % CI]", *(["accuracy"] if multiclass else []), *findings]
    lines = ["", "Prompt sensitivity: each data set below scored under each of its prompt sets (the first gives "
                 "its row above); spread = max − min over the sets.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in several:
        for name, run in d["prompt_sets"].items():
            m, ci = run["metrics"], run["metrics"].get("ci") or {}
            row = [d["name"], name, _cell(m["auc_macro"], ci.get("auc_macro"))]
            row += [_cell(m["accuracy"], ci.get("accuracy")) if "accuracy" in m else ""] if multiclass else []
            row += [_cell(m["auc"][f]) if f in m["auc"] else "" for f in findings]
            lines.append("| " + " | ".join(row) + " |")
        spread = d["prompt_spread"]
        row = [d["name"], "spread (max − min)", _cell(spread["auc_macro"])]
        row += [_cell(spread["accuracy"]) if "accuracy" in spread else ""] if multiclass else []
        row += [_cell(spread["auc"][f]) if f in spread["auc"] else "" for f in findings]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def table_markdown(data: dict[str, Any]) -> str:
    """The papers' table: one row per data set (macro AUC with its interval, images, findings,
    accuracy where multi-class, then each finding's AUC), and the group macros below it."""
    done = data["datasets"]
    findings = list(dict.fromkeys(f for d in done for f in d["findings"]))
    multiclass = any(d["task"] == "multiclass" for d in done)
    boot = data["bootstrap"]
    controlled = any("delta_auc_macro" in d["metrics"] for d in done)
    clustered = any(_unit(d)[0] == "group" for d in done)
    header = ["dataset", "macro AUC [95 % CI]", "n images", *(["n groups"] if clustered else []), "n findings",
              *(["accuracy [95 % CI]"] if multiclass else []),
              *(["control macro AUC", "Δ vs control [95 % CI, paired]"] if controlled else []), *findings]
    lines = [f"# Zero-shot benchmark: {data['suite']['name']}", "", composition_line(data), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in done:
        m, ci = d["metrics"], d["metrics"].get("ci") or {}
        row = [d["name"], _cell(m["auc_macro"], ci.get("auc_macro")), str(m["n"]),
               *([f"{_unit(d)[1]:,}" if _unit(d)[0] == "group" else "—"] if clustered else []), str(len(d["findings"]))]
        if multiclass:
            row.append(_cell(m.get("accuracy"), ci.get("accuracy")) if "accuracy" in m else "")
        if controlled:
            low, high = m.get("delta_auc_macro_ci_low"), m.get("delta_auc_macro_ci_high")
            row += [_cell(m["control_auc_macro"]), _signed(m["delta_auc_macro"], None if low is None else [low, high])]
        row += [_cell(m["auc"][f]) if f in m["auc"] else "" for f in findings]
        lines.append("| " + " | ".join(row) + " |")
    grouped = [(d, g, info) for d in done for g, info in d["metrics"]["groups"].items()]
    if grouped:
        lines += ["", "| dataset | group | macro AUC [95 % CI] | findings |", "|---|---|---|---|"]
        lines += [f"| {d['name']} | {g} | {_cell(info['auc_macro'], info.get('ci'))} | {', '.join(info['findings'])} |"
                  for d, g, info in grouped]
    lines += prompt_table(done)
    lines += [f"\nShared data: {n['line']}." for n in data.get("shared_data") or []]
    lines += [f"\nSkipped {d['name']}: {d['why']}; lower min_positives or list the findings."
              for d in data.get("skipped", [])]
    method = "no bootstrap" if not boot["n_boot"] else (
        f"{int(100 * boot['level'])} % intervals: {boot['n_boot']} bootstrap resamples (seed {boot['seed']}), "
        f"the same for every finding, {_resampled_what(done)}")
    lines += ["", f"AUC per finding over the images of each data set (uncertain labels left out of that "
                  f"finding); macro = mean over the findings; {method}."]
    return "\n".join(lines) + "\n"
