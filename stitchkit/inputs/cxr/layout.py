"""What every published chest X-ray dataset reader shares: its options, its record, the filters.

A dataset module (``nih.py``, ``mimic.py``, …) defines ``DATASET = CxrDataset(...)`` with an
``index(root, options) -> list[Item]`` that reads the layout as published and fills, for each
image, ``label`` (harmonised findings joined by ``|``, see `findings`), ``group`` (the patient)
and ``extra``: ``view`` (PA / AP / LATERAL / as written), ``study``, ``split`` (the official
split, ``""`` where none) and ``uncertain`` (findings labelled uncertain, joined by ``|``).
The filters that papers choose differently (views, one image per study, the split) are applied
here, once, after the index; the uncertain-label rule is the index's own (only CheXpert and
MIMIC have such labels).

A spec is the dataset's scheme, its folder and options as a query:
``chexpert:/data/CheXpert-v1.0-small?split=valid&uncertain=positive&views=all``. The folder is
made absolute with its links kept (`fileio.absolute`), so the images' paths, and the manifest
`stitch datasets SPEC -o` writes, name it as the spec did.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl

from ...errors import UsageError, closest
from ...fileio import absolute
from ..registry import InputFormat
from ..types import InputOptions, Inputs, Item

FRONTAL = ("PA", "AP", "FRONTAL")  # FRONTAL: frontal, PA or AP not known (SIIM; RSNA without headers)

# option: (allowed values, or None for free text; what it means)
CHOICES: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "views": (("frontal", "all", "pa", "ap", "lateral"), "which views: frontal (PA and AP), all, or one"),
    "per_study": (("all", "first"), "every image of a study, or its first (in the label file's order)"),
    "split": (None, "the official split to keep (the dataset's own names; all: every image)"),
    "uncertain": (("ignore", "positive", "negative"),
                  "an uncertain (-1) label: left out of that finding's scores, or counted as 1 or 0"),
    "text": (("report", "findings", "impression"), "the report section(s) beside each image"),
    "side": (("image", "text"), "embed the images (texts beside them) or the reports alone"),
    "labels": (None, "a label file instead of the layout's own; 'torchxrayvision': the copy its wheel ships"),
    "method": (("all", "physician"), "PadChest: every labelled image, or only those a physician labelled"),
    "headers": (None, "RSNA: the DICOM headers (ViewPosition) as CSV; 'torchxrayvision': its copy; none"),
    "reports": (None, "MIMIC-CXR: the folder of mimic-cxr-reports (files/p10/…/s5…txt) if not in or beside it"),
}


class Extras(NamedTuple):
    """What every dataset reader records of an image beside its label and patient: the store
    columns the filters (`select`) and the uncertain-label rule read, whatever the dataset.

    ``view``: PA, AP, LATERAL or as written (`view_name`); ``study``: the study it belongs to;
    ``split``: the official split ("" where none); ``uncertain``: findings labelled uncertain,
    joined by ``|``. A named tuple, not a frozen dataclass: it is built once per image, 377,110
    times for MIMIC-CXR, and a tuple is built in a quarter of the time.
    """

    view: str
    study: str
    split: str = ""
    uncertain: str = ""


EXTRAS = Extras._fields  # the store columns every dataset writes


@dataclass(frozen=True)
class DatasetOptions:
    """The spec's options; each dataset says which it takes (`CxrDataset.options`)."""

    views: str = "frontal"
    per_study: str = "all"
    split: str = "all"
    uncertain: str = "ignore"
    text: str = "report"
    side: str = "image"
    labels: str | None = None
    method: str = "all"
    headers: str | None = None
    reports: str | None = None


@dataclass(frozen=True)
class CxrDataset:
    """One published dataset: how it is named, what its folder holds, how it is indexed."""

    name: str  # the spec's scheme: nih:/data/nih
    title: str  # "NIH ChestX-ray14"
    layout: str  # one line: the files the folder holds as published
    index: Callable[[Path, DatasetOptions], list[Item]]
    terms: dict[str, str]  # the dataset's terms (lower case) -> harmonised finding names
    splits: tuple[str, ...] = ()  # the official split's names; () when the dataset has none
    options: tuple[str, ...] = ("views", "per_study", "split")
    texts: bool = False  # report texts beside the images
    citation: str = ""
    extras: tuple[str, ...] = ()  # store columns of this dataset beyond EXTRAS (PadChest: terms)
    split_from: str = ""  # where the official split comes from; "" when the dataset publishes none

    @property
    def findings(self) -> tuple[str, ...]:
        """The harmonised findings this dataset labels."""
        return tuple(sorted(set(self.terms.values())))

    def input_format(self) -> InputFormat:
        return InputFormat(
            self.name, f"{self.title} as published (`stitch datasets {self.name}`)",
            f"{self.title} ({self.name}:FOLDER)",
            scheme=self.name, read=self.read, labels=True, groups=True, texts=self.texts,
            captions=self.texts)

    def read(self, sources: list[str], options: InputOptions) -> Inputs:
        if len(sources) != 1:
            raise UsageError(f"{self.name}: give one folder ({self.name}:/data/{self.name}), not {len(sources)}")
        root, chosen = parse_spec(self, sources[0])
        items = select(self.index(root, chosen), chosen)
        if not items:
            raise UsageError(f"{self.name}:{root}: no image is left after the options "
                             f"({describe(chosen)}): check views=, split= and the folder")
        modality = "text" if chosen.side == "text" else "image"
        columns = ["label", "group", *(["text"] if self.texts else []), *EXTRAS, *self.extras]
        return Inputs(items, modality, f"{self.name}:{root}", columns)


def parse_spec(dataset: CxrDataset, spec: str) -> tuple[Path, DatasetOptions]:
    """The folder and options of ``FOLDER?key=value&…``; one line naming a wrong key or value."""
    folder, _, query = spec.partition("?")
    values: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        key = key.replace("-", "_")
        if key not in dataset.options:
            close = closest(key, dataset.options, cutoff=0.6)
            hint = f"did you mean {close}=? " if close else ""
            raise UsageError(f"{dataset.name}: unknown option {key!r}: {hint}{dataset.name} takes "
                             f"{', '.join(dataset.options)}")
        allowed = CHOICES[key][0] if key != "split" else ("all", *dataset.splits)
        if allowed is not None and value not in allowed:
            raise UsageError(f"{dataset.name}: {key}={value!r} is not one of {', '.join(allowed)}")
        values[key] = value
    root = absolute(Path(folder).expanduser())  # links kept: a manifest (-o) names the folder as given
    if not root.is_dir():
        raise UsageError(f"{dataset.name}: {root} is not a folder: give the folder holding "
                         f"{dataset.title} as published ({dataset.layout})")
    return root, DatasetOptions(**values)


def describe(options: DatasetOptions) -> str:
    """The options that differ from the defaults, as a spec's query writes them."""
    default = DatasetOptions()
    changed = [f"{f.name}={getattr(options, f.name)}" for f in fields(options)
               if getattr(options, f.name) != getattr(default, f.name)]
    return "&".join(changed) or "defaults"


def select(items: list[Item], options: DatasetOptions) -> list[Item]:
    """Keep the views, the split and the images per study the options ask for."""
    if options.views != "all":
        wanted = FRONTAL if options.views == "frontal" else (options.views.upper(),)
        items = [it for it in items if it.extra["view"] in wanted]
    if options.split != "all":
        items = [it for it in items if it.extra["split"] == options.split]
    if options.per_study == "first":
        seen: set[str] = set()
        items = [it for it in items if not (it.extra["study"] in seen or seen.add(it.extra["study"]))]
    return items


def view_name(raw: str) -> str:
    """PA, AP or LATERAL from the ways datasets write views; anything else upper-cased as is."""
    text = raw.strip().upper().replace("_", " ")
    if text in ("PA", "POSTEROANTERIOR") or text.startswith("PA "):
        return "PA"
    if text in ("AP", "ANTEROPOSTERIOR") or text.startswith("AP "):
        return "AP"  # AP supine, AP horizontal, AP axial
    if text in ("L", "LL", "LATERAL", "LAT", "RL") or "LATERAL" in text:
        return "LATERAL"
    return text


def record(id: str, path: Path | None, *, label: str, patient: str, extras: Extras,
           text: str | None = None) -> Item:
    """One image as every dataset reader writes it. Its ``extra`` is a fresh dict (readers add
    their own columns to it), written out field by field: ``asdict`` would deep-copy, row after
    row of MIMIC-CXR's 377,110."""
    extra = {"view": extras.view, "study": extras.study, "split": extras.split, "uncertain": extras.uncertain}
    return Item(id, path=path, text=text, label=label, group=patient, extra=extra)


def child(folder: Path, name: str) -> Path:
    """``folder / name`` for a file name (no ``/``) without parsing the folder's path again:
    pathlib's own shortcut for its listings (``Path._make_child_relpath``, Python 3.10-3.12),
    ``folder / name`` where there is none or ``name`` is not one plain part. Python 3.11 parses
    every path it builds: ``Path(str)`` of a MIMIC-CXR image costs about eight times this."""
    make = getattr(folder, "_make_child_relpath", None)
    if make is None or "/" in name or name in ("", ".", ".."):
        return folder / name
    return make(name)


def child_of(folder: Path) -> Callable[[str], Path]:
    """:func:`child` with ``folder`` bound, looked up once (a study's images, one after another):
    for names without ``/`` only (a ``.jpg`` name built from an id)."""
    return getattr(folder, "_make_child_relpath", folder.__truediv__)


def need(root: Path, name: str, dataset: CxrDataset, hint: str = "") -> Path:
    """``root/name``, or one line naming the missing file of the layout."""
    path = root / name
    if not path.exists():
        raise UsageError(f"{dataset.name}:{root}: {name} is missing{': ' + hint if hint else ''} "
                         f"({dataset.title} as published holds {dataset.layout})")
    return path


def label_file(root: Path, name: str, dataset: CxrDataset, options: DatasetOptions,
               shipped: str | None = None) -> Path:
    """The label file: ``labels=`` when given ('torchxrayvision': the copy its wheel ships as
    ``shipped``), else ``root/name``."""
    if options.labels == "torchxrayvision" and shipped:
        return shipped_file(shipped)
    if options.labels:
        path = Path(options.labels).expanduser()
        if not path.is_file():
            raise UsageError(f"{dataset.name}: labels={path} is not a file")
        return path
    hint = (f"add it, or use the copy torchxrayvision ships: {dataset.name}:{root}?labels=torchxrayvision"
            if shipped else "")
    return need(root, name, dataset, hint)


def shipped_file(name: str) -> Path:
    """A label file inside the installed torchxrayvision wheel (located, not imported: importing
    torchxrayvision loads scikit-image and its models)."""
    from importlib.util import find_spec

    spec = find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("labels=torchxrayvision needs the torchxrayvision package: "
                         "pip install torchxrayvision==1.5.7 (or give the label file)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise UsageError(f"torchxrayvision's wheel has no data/{name}: install torchxrayvision==1.5.7")
    return path


def read_rows(path: Path, wanted: tuple[str, ...] = ()) -> Iterator[dict[str, str]]:
    """The rows of a CSV label file, plain or gzipped, as dicts of strings; one line naming the
    ``wanted`` columns its header lacks."""
    rows = read_table(path)
    header = next(rows, [])
    check_columns(path, header, wanted)
    for row in rows:
        if row:  # a blank line
            yield dict(zip(header, row, strict=False))


def check_columns(path: Path, header: list[str] | None, wanted: tuple[str, ...]) -> None:
    """One line naming the columns a label file lacks."""
    missing = [c for c in wanted if c not in (header or [])]
    if missing:
        raise UsageError(f"{path} lacks the column(s) {', '.join(missing)}: is it the dataset's own file?")


def read_table(path: Path) -> Iterator[list[str]]:
    """The rows of a CSV label file as lists, its header first: `read_rows` without a dict per
    row, for the large files (MIMIC-CXR's 377,110 rows)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as fh:
            yield from csv.reader(fh)
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise UsageError(f"{path} cannot be read as CSV ({exc}): is it the dataset's own file?") from exc


def walk_files(root: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Every file under ``root`` whose name ends in one of ``suffixes``, by file name: one walk,
    for datasets whose images may sit in any sub-folder (numbered zips, nested DICOM series)."""
    found: dict[str, Path] = {}
    for folder, _, names in os.walk(root, followlinks=True):  # image folders are often links
        for name in names:
            if name.endswith(suffixes):
                found[name] = Path(folder, name)
    return found


class paused_gc:  # noqa: N801 - used as a context manager: `with paused_gc():`
    """Pause the cyclic garbage collector while an index builds its records: hundreds of
    thousands of new objects that form no cycles would otherwise set off full collections that
    free nothing (a third of the time of indexing CheXpert's 223k rows). On exit they join the
    oldest generation (`gc.freeze` then `gc.unfreeze`, where nothing else is frozen): left in the
    youngest, the first allocation after the pause would walk them all, and later the middle
    generation again (about a tenth of indexing MIMIC-CXR)."""

    def __enter__(self) -> None:
        import gc

        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        import gc

        if gc.get_freeze_count() == 0:  # never unfreeze what someone else froze
            gc.freeze()
            gc.unfreeze()
        if self.was_enabled:
            gc.enable()


def keeps(options: DatasetOptions) -> Callable[[str, str], bool]:
    """Whether `select` keeps an image of that view and split: an index over hundreds of thousands
    of rows (MIMIC-CXR) skips the rows select would drop before it builds their records."""
    views = None if options.views == "all" else FRONTAL if options.views == "frontal" else (options.views.upper(),)
    return lambda view, split: (views is None or view in views) and options.split in ("all", split)
