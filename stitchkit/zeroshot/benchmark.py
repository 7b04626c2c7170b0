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
        prompts: cxr14               # a prompt set's short name or file
        findings: auto               # a list, or auto: every finding of the prompt set with
        min_positives: 10            #   at least this many positives (and a negative) in the rows
        where: {split: test}         # rows whose store column equals the value (optional)
        ids: nih-test-ids.txt        # rows with these ids (optional)
        within: [Pneumonia]          # rows whose label carries one of these (optional)
        groups: {head: [...], tail: [...]}   # or {rule: positives, head: 1000, medium: 100, tail: 0}

Relative paths (``prompts`` files, ``ids``) are looked up beside the suite file, then in the
current folder. Unknown keys are refused in one line naming the closest allowed key.

Store columns: ``labels`` holds findings joined by ``|`` (``No Finding`` where none); a finding
is positive where a prompt class's labels match one of them (as `stitch classify` matches).
``uncertain`` (optional) holds the findings labelled uncertain, joined the same way: such a row
is left out of that finding's AUC only. Multi-class entries keep the rows whose label matches
exactly one class (CheXpert 5x200 style) and add accuracy (argmax over the classes).

Metrics: AUC per finding (scikit-learn's ``roc_auc_score`` on the ranking scores `stitch
classify` writes: logit differences or log-odds), macro AUC (mean over findings), each group's
macro AUC, with percentile bootstrap intervals: every resample draws images once and every
finding's AUC is computed under that same draw, so the macro AUC and the group means get
intervals of their own. Images, not patients, are resampled (stitchkit has no patient
bootstrap yet); with several images per patient the intervals are somewhat too narrow. Up to
:data:`~stitchkit.zeroshot.metrics.EXACT_MAX` images this is the ordinary bootstrap; above
it the bag of little bootstraps with the subsets and Poisson counts `stitch classify` uses
(:func:`~stitchkit.zeroshot.metrics.bootstrap_plan`), so its cost does not grow with N.
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
from ..errors import UsageError, closest
from ..fileio import atomic_output, check_writable_dir, read_id_file
from ..results import BENCHMARK_SCHEMA, append_records, to_record
from ..settings import Range, setting
from ..store import EmbeddingStore
from ..store import format as fmt
from .classify_plan import multilabel_score_setting, scoring_setting
from .metrics import DEFAULT_BOOTSTRAP, auc, bootstrap_plan, nanmean, resampled_auc
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
    prompts: str
    findings: list[str] | None = None  # None: auto
    min_positives: int = 10
    where: dict[str, str] = field(default_factory=dict)
    ids: str | None = None
    within: list[str] = field(default_factory=list)
    groups: Groups | None = None
    description: str = ""


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


def parse_entry(raw: Any, source: str, index: int) -> Entry:
    """One data set of a suite document, validated; errors name the file and the data set."""
    where = f"{source}: datasets[{index}]"
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: expected a mapping with name, store, task, prompts, got {raw!r}")
    if isinstance(raw.get("name"), str):
        where = f"{source}: dataset {raw['name']!r}"
    _refuse_unknown(raw, ENTRY_KEYS, where)
    missing = [k for k in ("name", "store", "task", "prompts") if not isinstance(raw.get(k), str) or not raw[k].strip()]
    if missing:
        raise SuiteError(f"{where}: needs {', '.join(missing)} (a non-empty string each)")
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
        name=raw["name"].strip(), store=raw["store"].strip(), task=raw["task"], prompts=raw["prompts"].strip(),
        findings=findings, min_positives=min_pos, where={str(k): str(v) for k, v in rows.items()},
        ids=raw.get("ids"), within=_strings(raw["within"], f"{where} within") if raw.get("within") else [],
        groups=groups, description=str(raw.get("description") or ""),
    )


def parse_suite(data: Any, *, source: str) -> Suite:
    """Validate a loaded suite document."""
    if not isinstance(data, dict):
        raise SuiteError(f"{source}: expected a mapping with name and datasets, got {type(data).__name__}")
    _refuse_unknown(data, SUITE_KEYS, source)
    raw = data.get("datasets")
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{source}: 'datasets' must be a non-empty list of data sets")
    entries = [parse_entry(r, source, i) for i, r in enumerate(raw)]
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
    keep = np.ones(len(store), dtype=bool)
    for column, value in entry.where.items():
        coded = store.column_codes(column)
        if coded is None:
            raise UsageError(f"dataset {entry.name}: where {column}={value}, but store {store.path} has no "
                             f"column {column!r}: embed it with a reader that writes {column}, or drop the condition")
        values, codes = coded
        keep &= (values == value)[codes]
    if entry.ids:
        chosen = np.zeros(len(store), dtype=bool)
        chosen[store.index_of(read_id_file(suite_file(suite, entry.ids, "ids")))] = True
        keep &= chosen
    if entry.within:
        coded = store.column_codes(fmt.LABELS)
        if coded is None:
            raise UsageError(f"dataset {entry.name}: within needs labels, but store {store.path} has none")
        keep &= _parts_match(coded[0], entry.within)[coded[1]]
    rows = np.flatnonzero(keep)
    if not len(rows):
        raise UsageError(f"dataset {entry.name}: no row of store {store.path} is selected by "
                         f"{_selection(entry)}: check the conditions against the store (`stitch info`)")
    return rows


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
    return Selection(rows, classes, truth, unsure)


# -- metrics --------------------------------------------------------------------------------------
@dataclass
class EntryScores:
    """One entry's per-image scores beside their truth, as the metrics read them."""

    truth: np.ndarray  # (n, C) bool
    valid: np.ndarray  # (n, C) bool: the rows each finding's AUC counts (not uncertain)
    ranking: np.ndarray  # (n, C): what AUC ranks by
    probs: np.ndarray  # (n, C): what accuracy's argmax reads
    task: str


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


def _counts(rng: np.random.Generator, n: int, b: int, size: int, little: bool) -> np.ndarray:
    """(size, b) float32 counts of one resample each: n draws with replacement among b = n
    images (the ordinary bootstrap; a bincount of n uniform draws, which is the multinomial
    and far cheaper to draw than ``rng.multinomial`` over many images), or Poisson(n / b)
    counts over a little bootstrap's b images."""
    if little:
        return rng.poisson(n / b, size=(size, b)).astype(np.float32)
    picks = rng.integers(0, b, size=(size, n)) + (np.arange(size) * b)[:, None]
    return np.bincount(picks.ravel(), minlength=size * b).reshape(size, b).astype(np.float32)


def bootstrap_draws(scores: EntryScores, n_boot: int, seed: int) -> Draws:
    """Every finding's AUC (and accuracy) under the same resamples of images: the ordinary
    bootstrap up to EXACT_MAX images, the bag of little bootstraps above (as `stitch classify`)."""
    n = len(scores.truth)
    rng = np.random.default_rng(seed)
    n_sub, b, per_sub = bootstrap_plan(n, n_boot)
    subsets = [np.arange(n) if b == n else np.sort(rng.choice(n, size=b, replace=False)) for _ in range(n_sub)]
    block = int(np.clip((1 << 18) // b, 16, 256))  # resamples at once: (block, b) work arrays of ~1 MB
    parts = []
    for rows in subsets:
        stats = _under_weights(scores, rows)
        draws = []
        for a in range(0, per_sub, block):
            draws.append(stats(_counts(rng, n, b, min(block, per_sub - a), n_sub > 1)))
        parts.append((np.concatenate(draws), stats(np.ones((1, b), dtype=np.float32))[0]))
    method = ("percentile bootstrap over images" if n_sub == 1 else
              f"bag of little bootstraps over images: {n_sub} subsets of {b:,} images, each resampled to about {n:,}")
    return Draws(parts, n_sub * per_sub,
                 method + "; the same resamples for every finding; patients are not kept together")


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
        "level": LEVEL, "n_boot": draws.n_boot, "method": draws.method,
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


@dataclass
class BenchmarkOptions:
    """How a suite is run, besides its route."""

    bootstrap: int = setting(DEFAULT_BOOTSTRAP, "Bootstrap resamples of images for the 95 % intervals (0: none).",
                             within=Range(0))
    seed: int = setting(0, "Seed of the bootstrap.")
    datasets: list[str] = field(default_factory=list)  # run only these entries (all when empty)
    command: dict[str, Any] | None = None  # provenance of the records (the CLI's command line)
    on_entry: Callable[[str, int, int], None] | None = None  # (name, index, count) before each
    control: str | os.PathLike | None = None  # the control route's benchmark folder: paired differences


def check_stores(suite: Suite, stores: dict[str, str], names: list[str],
                 route_adapt: dict[str, str] | None = None) -> list[Entry]:
    """The entries to run; a store the suite needs but was not given is refused in one line."""
    unknown = [n for n in names if n not in {e.name for e in suite.entries}]
    if unknown:
        raise UsageError(f"--dataset {unknown[0]}: suite {suite.name} has no such data set "
                         f"(its data sets: {', '.join(e.name for e in suite.entries)})")
    entries = [e for e in suite.entries if not names or e.name in names]
    unadapted = sorted(set(route_adapt or {}) - set(suite.stores()))
    if unadapted:
        raise UsageError(f"--adapt {unadapted[0]}=...: suite {suite.name} reads no store named {unadapted[0]} "
                         f"(its stores: {', '.join(suite.stores())})")
    extra = sorted(set(stores) - set(suite.stores()))
    if extra:
        raise UsageError(f"--store {extra[0]}=...: suite {suite.name} reads no store named {extra[0]} "
                         f"(its stores: {', '.join(suite.stores())})")
    missing = list(dict.fromkeys(e.store for e in entries if e.store not in stores))
    if missing:
        used = ", ".join(f"{e.name} ({e.store})" for e in entries if e.store in missing)
        raise UsageError(f"suite {suite.name} needs --store {missing[0]}=FILE.h5"
                         + (f" and {', '.join(m + '=...' for m in missing[1:])}" if missing[1:] else "")
                         + f" for {used}; or choose data sets with --dataset")
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

    def prompts(self, entry: Entry) -> PromptSet:
        """The entry's prompt set in its task's mode, each file read once per run."""
        if entry.prompts not in self._prompts:
            self._prompts[entry.prompts] = load_prompts(resolve_prompt_path(_prompt_spec(entry.prompts, self.suite)))
        found = self._prompts[entry.prompts]
        return PromptSet(found.classes, entry.task, found.source)

    def store(self, name: str) -> EmbeddingStore:
        """The store given as ``name``, opened once per run (its columns are read once)."""
        if name not in self._open:
            self._open[name] = EmbeddingStore(self.stores[name])
        return self._open[name]

    def close(self) -> None:
        for store in self._open.values():
            store.close()
        self._open.clear()


def run_entry(entry: Entry, job: SuiteJob) -> dict[str, Any]:
    """Score one data set through the job's route and measure it; the per-image scores stay in
    ``out/scores/NAME.h5``."""
    from .score_writer import read_scores
    from .scoring import classify_store

    route = job.route
    prompts = job.prompts(entry)
    store = job.store(entry.store)
    chosen = select(store, entry, job.suite, prompts)
    ids = [str(i) for i in store.ids_at(chosen.rows)]
    scores_path = job.out / "scores" / f"{_slug(entry.name)}.h5"
    scores_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = classify_store(store, PromptSet(chosen.classes, entry.task, prompts.source),
                            text_model=route.text_model, prompt_store=route.prompt_store,
                            map_path=route.map_path, head_path=route.head_path, scoring=route.scoring,
                            adapt_path=route.adapt.get(entry.store),
                            output=scores_path, ids=ids, bootstrap=0, allow_missing_classes=True,
                            multilabel_score=route.multilabel_score, patch=route.patch)
    seconds = time.perf_counter() - t0
    sf = read_scores(scores_path)
    order = np.arange(len(ids)) if sf.ids == ids else np.array([{i: k for k, i in enumerate(sf.ids)}[i] for i in ids])
    names = [c.name for c in chosen.classes]
    scores = EntryScores(chosen.truth, ~chosen.uncertain, sf.ranking[order], sf.probabilities[order], entry.task)
    positives = [int(x) for x in (chosen.truth & ~chosen.uncertain).sum(0)]
    groups = entry.groups.assign(names, positives) if entry.groups else {}
    metrics = entry_metrics(scores, names, groups, job.options.bootstrap, job.options.seed)
    if job.options.control is not None:
        metrics.update(control_metrics(scores, ids, Path(job.options.control) / "scores" / scores_path.name, job.options))
    return {"name": entry.name, "store": entry.store, "store_path": str(job.stores[entry.store]),
            "task": entry.task, "prompts": prompts.source, "selection": _selection(entry), "findings": names,
            "groups_rule": entry.groups.to_dict() if entry.groups else None, "metrics": metrics,
            "scores": str(scores_path), "composition": result.composition, "scoring": result.scoring,
            "classify_seconds": seconds, "notes": result.notes + _notes(metrics, entry.groups)}


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
                                    n_boot=options.bootstrap, seed=options.seed)
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
    entries = check_stores(suite, stores, options.datasets, route.adapt)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_writable_dir(out)
    job = SuiteJob(suite, stores, route, out, options)
    done, skipped = [], []
    try:
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
        "bootstrap": {"n_boot": options.bootstrap, "seed": options.seed, "level": LEVEL, "unit": "image"},
        "datasets": done,
        "skipped": skipped,
    }
    data["seconds"] = {"classify": sum(d["classify_seconds"] for d in done)}
    write_outputs(data, out, options)
    data["seconds"]["total"] = time.perf_counter() - t0
    data = _jsonable(data)  # strict JSON: an AUC that does not exist is null, not NaN
    _write_json(out / "benchmark.json", data)
    return data


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
        if ci:
            metrics["ci"] = ci
        result = {"n": m["n"], "classes": d["findings"], "mode": d["task"], "scoring": d["scoring"],
                  "output": d["scores"], "composition": d["composition"], "metrics": _jsonable(metrics)}
        rec = to_record("classify", result, command=command, dataset=d["name"])
        out.append({**rec, "suite": data["suite"]["name"], "selection": d["selection"]})
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


def table_markdown(data: dict[str, Any]) -> str:
    """The papers' table: one row per data set (macro AUC with its interval, images, findings,
    accuracy where multi-class, then each finding's AUC), and the group macros below it."""
    done = data["datasets"]
    findings = list(dict.fromkeys(f for d in done for f in d["findings"]))
    multiclass = any(d["task"] == "multiclass" for d in done)
    boot = data["bootstrap"]
    controlled = any("delta_auc_macro" in d["metrics"] for d in done)
    header = ["dataset", "macro AUC [95 % CI]", "n images", "n findings",
              *(["accuracy [95 % CI]"] if multiclass else []),
              *(["control macro AUC", "Δ vs control [95 % CI, paired]"] if controlled else []), *findings]
    lines = [f"# Zero-shot benchmark: {data['suite']['name']}", "", composition_line(data), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in done:
        m, ci = d["metrics"], d["metrics"].get("ci") or {}
        row = [d["name"], _cell(m["auc_macro"], ci.get("auc_macro")), str(m["n"]), str(len(d["findings"]))]
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
    lines += [f"\nSkipped {d['name']}: {d['why']}; lower min_positives or list the findings."
              for d in data.get("skipped", [])]
    method = "no bootstrap" if not boot["n_boot"] else (
        f"{int(100 * boot['level'])} % intervals: {boot['n_boot']} bootstrap resamples of images (seed {boot['seed']}), "
        "the same for every finding; patients are not kept together")
    lines += ["", f"AUC per finding over the images of each data set (uncertain labels left out of that "
                  f"finding); macro = mean over the findings; {method}."]
    return "\n".join(lines) + "\n"
