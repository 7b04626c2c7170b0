"""Input formats: what `stitch embed SOURCE…` reads, one module per format, one line to add one.

As for the encoders (`stitchkit.encoders.registry`), a table names the modules and they are
imported when first asked for. Each module defines ``FORMAT = InputFormat(...)``, saying

* which sources it reads: ``claim(sources)``, or a ``scheme`` (``nih`` reads ``nih:/data/nih``);
* how it lists them: ``read(sources, options) -> Inputs`` (ids, labels, texts; no pixels);
* how a DataLoader worker reads a sample held inside a container file (a tar member, a dataset
  cell): ``fetch(item, limit) -> (bytes, name)`` for the ``containers`` it lists (plain files
  need none: `pixels.load_file` reads them);
* which read options it takes (`OPTIONS`: ``--label-from`` is refused by the others);
* what it supports: ``ray`` (``--engine ray``), ``shards`` (one input of several files,
  ``--shard i/N`` splits whole files), ``labels``, ``groups``, ``texts``, and ``captions``
  (images with texts beside them: a text model embeds the texts).

`read_inputs` asks `resolve` which format reads a source, `pixels.load_item` asks
`for_container`, and the Ray engine and the embedding job ask the flags; nothing else
dispatches on a format. docs/inputs.md shows `format_table()` (tests/test_inputs_registry.py
keeps the two equal).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import UsageError
from .types import InputOptions, Inputs, Item

# Claim order: the first format whose claim accepts the sources reads them (formats with a
# scheme are asked first). One line per format: a module of `stitchkit.inputs` defining FORMAT.
FORMATS: tuple[str, ...] = (
    "webdataset",  # .tar shards: a list, a glob or a brace pattern of .tar names
    "hf",  # Hugging Face save_to_disk folders, .parquet files and folders of them
    "manifest",  # .csv / .jsonl
    "textfile",  # .txt: one text per line
    "folder",  # any other folder: image files, DICOM included, labels from sub-folders
    "dicom",  # DICOM files inside folders, manifests and shards; claims no source itself
    # Chest X-ray datasets as published, each by its scheme (nih:/data/nih): see cxr/layout.py.
    "cxr.nih",
    "cxr.chexpert",
    "cxr.mimic",
    "cxr.openi",
    "cxr.padchest",
    "cxr.rsna",
    "cxr.siim",
    "cxr.vindr",
    "cxr.covid",
)

# The read options `read_inputs` takes, the flag a message names, and whether a format that does
# not take the option refuses it (True) or ignores it (False: --where on a folder always was).
OPTIONS: dict[str, tuple[str, bool]] = {
    "columns": ("--id-column/--path-column/--text-column/--label-column/--group-column/--image-column", False),
    "root": ("--root", False),
    "where": ("--where", False),
    "label_from": ("--label-from", True),
    "dicom_tags": ("--dicom-tags", False),
    "grey_range": ("--grey-range", False),
}
CAPABILITIES = ("ray", "shards", "labels", "groups", "texts", "captions")


@dataclass(frozen=True)
class InputFormat:
    """One input format; see the module docstring for what each field means."""

    name: str  # the module's name; also the `Inputs.kind` of what it reads
    description: str  # one line: what it reads and how it is named
    noun: str  # how a message names it: "WebDataset .tar shards"
    claim: Callable[[list[str]], bool] | None = None  # None: claims no source (a file kind)
    read: Callable[[list[str], InputOptions], Inputs] | None = None
    scheme: str | None = None  # "nih": claims "nih:/data/nih", and `read` gets "/data/nih"
    containers: tuple[str, ...] = ()  # the `Item.container` values whose bytes `fetch` reads
    fetch: Callable[[Item, int | None], tuple[bytes, str]] | None = None
    options: tuple[str, ...] = ()  # keys of OPTIONS
    ray: bool = False
    shards: bool = False
    labels: bool = False
    groups: bool = False
    texts: bool = False
    captions: bool = False

    def __post_init__(self) -> None:
        unknown = [o for o in self.options if o not in OPTIONS]
        if unknown:
            raise ValueError(f"input format {self.name!r}: unknown options {unknown}; known: {', '.join(OPTIONS)}")
        if self.containers and self.fetch is None:
            raise ValueError(f"input format {self.name!r} lists containers but has no fetch")
        if (self.claim is not None or self.scheme is not None) and self.read is None:
            raise ValueError(f"input format {self.name!r} claims sources but has no read")

    def claims(self, sources: list[str]) -> bool:
        if self.scheme is not None:
            return all(s.startswith(self.scheme + ":") for s in sources)
        return self.claim is not None and self.claim(sources)

    def paths(self, sources: list[str]) -> list[str]:
        """What `read` gets: the sources, without the scheme of a scheme format."""
        cut = len(self.scheme) + 1 if self.scheme is not None else 0
        return [s[cut:] for s in sources]


_EXTRA: list[InputFormat] = []  # formats registered at run time: they claim before FORMATS


@cache
def _builtin() -> tuple[InputFormat, ...]:
    found = []
    for module in FORMATS:
        fmt = importlib.import_module(f"{__package__}.{module}").FORMAT
        if not isinstance(fmt, InputFormat):
            raise TypeError(f"stitchkit.inputs.{module}.FORMAT is not an InputFormat")
        found.append(fmt)
    return tuple(found)


def formats() -> tuple[InputFormat, ...]:
    """Every registered format, in claim order."""
    return (*_EXTRA, *_builtin())


def register(fmt: InputFormat) -> InputFormat:
    """Add a format defined outside this package (a plugin, a notebook, a test); it claims
    before the built-in ones. Built-in formats are one line in FORMATS instead."""
    if any(f.name == fmt.name for f in formats()):
        raise ValueError(f"an input format named {fmt.name!r} is already registered")
    _EXTRA.insert(0, fmt)
    return fmt


def input_format(name: str) -> InputFormat:
    """The format of that name (an `Inputs.kind`)."""
    for fmt in formats():
        if fmt.name == name:
            return fmt
    raise UsageError(f"unknown input format {name!r}: known are {', '.join(f.name for f in formats())}")


def for_container(container: str) -> InputFormat:
    """The format whose `fetch` reads samples held in ``container`` (an `Item.container`)."""
    for fmt in formats():
        if container in fmt.containers:
            return fmt
    raise UsageError(f"no input format reads samples held in {container!r} containers")


def check_options(fmt: InputFormat | None, given: Iterable[str]) -> None:
    """Refuse a refusable option ``fmt`` does not take (any, when no format claimed the input)."""
    for name in given:
        flag, refused = OPTIONS[name]
        if refused and (fmt is None or name not in fmt.options):
            takers = [f.noun for f in formats() if name in f.options]
            raise UsageError(f"{flag} applies to {' and '.join(takers)} only")


def resolve(sources: list[str], given: Iterable[str] = ()) -> InputFormat:
    """The format that reads ``sources`` (at least one), after checking the options ``given``
    (names in OPTIONS) against it; a one-line UsageError when no format claims them."""
    given = tuple(given)
    # A spec with a scheme ("nih:/data/nih.tar") is its scheme's, whatever its name ends with.
    for fmt in sorted(formats(), key=lambda f: f.scheme is None):
        if fmt.claims(sources):
            check_options(fmt, given)
            return fmt
    check_options(None, given)
    if len(sources) > 1:
        raise UsageError(f"{len(sources)} inputs given: several inputs must all be .tar shards")
    src = Path(sources[0])
    if not src.exists():
        raise UsageError(f"input {src} does not exist: give an image folder, a .csv/.jsonl manifest, "
                         "a .txt file, .tar shards or a Hugging Face dataset")
    raise UsageError(f"input {src}: unknown kind '{src.suffix}': use a folder, .csv, .jsonl, .txt, "
                     ".tar or .parquet")


def require(inputs: Inputs, capability: str, message: str) -> InputFormat:
    """The format of ``inputs``; UsageError(``message``, with {kind} filled) when it lacks
    ``capability`` (one of CAPABILITIES)."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}: one of {', '.join(CAPABILITIES)}")
    fmt = input_format(inputs.kind)
    if not getattr(fmt, capability):
        raise UsageError(message.format(kind=inputs.kind))
    return fmt


def format_table() -> str:
    """The formats and what each supports, as the Markdown table in docs/inputs.md."""
    def flag(option: str) -> str:
        return "`--*-column`" if option == "columns" else f"`{OPTIONS[option][0]}`"

    head = ["format", "reads", "options", *CAPABILITIES]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for fmt in formats():
        name = f"`{fmt.name}`" + (f" (`{fmt.scheme}:PATH`)" if fmt.scheme else "")
        cells = [name, fmt.description, ", ".join(flag(o) for o in fmt.options) or "–",
                 *("yes" if getattr(fmt, c) else "–" for c in CAPABILITIES)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
