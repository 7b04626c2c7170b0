"""Every on-disk format stitchkit writes, its version, and the one check of a file's version.

Each kind of file carries an *encoding type* (what it is) and a *format version* (which layout
of it), after anndata's ``encoding-type`` / ``encoding-version``; the attribute names are the
ones each kind has always used, so files written by earlier versions read unchanged:

=================  ================================  ==========================================
kind               encoding type                     where the type and version are written
=================  ================================  ==========================================
embedding store    ``stitchkit.embeddings``          HDF5 root attrs ``format``, ``format_version``
map                ``map``                           safetensors header ``stitchkit``: ``kind``,
head               ``head``                          ``format_version`` (artifacts.py)
head checkpoint    ``head-checkpoint``
score file, HDF5   ``stitchkit.scores``              HDF5 root attrs ``format``, ``format_version``
score file, CSV    ``stitchkit.scores-csv``          ``NAME.csv-metadata.json`` beside the CSV
export folder      ``stitchkit.clip-retrieval-export``  ``stitchkit.json``: ``format``, ``format_version``
=================  ================================  ==========================================

Every other kind of file stitchkit writes (result records and tables, benchmark summaries,
learning curves, sweep tables, manifests, id files, suites, parts folders, figures and pages) is
a :class:`Format` here too, and :func:`stitchkit.inspect.identify` names any file's kind by its content (it sits above
the readers it asks): `stitch info` and `stitch report` use it, and nothing else guesses.

The rule: a reader reads every version in its kind's ``readable``, and refuses any other in
one line (:class:`~stitchkit.errors.FormatError`, exit 2); a newer one says "upgrade
stitchkit". A file that declares no version is version 1 (stores, scores and exports written
before the version was recorded, and plain files from other tools). A change that an older
reader would misread raises the kind's ``version`` here (and keeps reading the old one).
:func:`check_format` is the only place in stitchkit that compares format versions;
tests/test_formats.py holds each kind's version-1 files and checks they still read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import FormatError


@dataclass(frozen=True)
class Format:
    """One kind of file: how messages name it, what it says it is, the version written now and
    the versions read."""

    name: str
    encoding_type: str
    version: int
    readable: tuple[int, ...]

    @property
    def schema(self) -> str:
        """``TYPE/VERSION``, as a JSON file of this kind states it in its ``schema`` field."""
        return f"{self.encoding_type}/{self.version}"


STORE = Format("embedding store", "stitchkit.embeddings", 1, (1,))
MAP = Format("map", "map", 1, (1,))
HEAD = Format("head", "head", 1, (1,))
HEAD_CHECKPOINT = Format("head checkpoint", "head-checkpoint", 1, (1,))
SCORES_H5 = Format("score file", "stitchkit.scores", 1, (1,))
SCORES_CSV = Format("score file", "stitchkit.scores-csv", 1, (1,))
EXPORT = Format("clip-retrieval export folder", "stitchkit.clip-retrieval-export", 1, (1,))

FORMATS = (STORE, MAP, HEAD, HEAD_CHECKPOINT, SCORES_H5, SCORES_CSV, EXPORT)
# The kinds that share the safetensors container (artifacts.py), by their header ``kind``.
ARTIFACTS = {f.encoding_type: f for f in (MAP, HEAD, HEAD_CHECKPOINT)}


def check_format(path: str | os.PathLike, fmt: Format, declared: Any) -> int:
    """The format version ``declared`` by the file at ``path`` (None: it declares none, which
    means 1), if this stitchkit reads it; else :class:`FormatError` in one line."""
    if declared is None:
        return 1
    if isinstance(declared, bytes):
        declared = declared.decode("utf-8", "replace")
    try:
        version = int(declared)
        if version != float(declared):
            raise ValueError
    except (TypeError, ValueError):
        raise FormatError(f"{path}: its {fmt.name} format version {declared!r} is not a whole number: "
                          "the file is damaged; write it again") from None
    if version in fmt.readable:
        return version
    reads = ", ".join(map(str, fmt.readable))
    if version > max(fmt.readable):
        raise FormatError(f"{path}: {fmt.name} format version {version} ({fmt.encoding_type}) is from a newer "
                          f"stitchkit; this one reads version {reads}: upgrade stitchkit")
    raise FormatError(f"{path}: {fmt.name} format version {version} ({fmt.encoding_type}) is one this stitchkit "
                      f"no longer reads (it reads version {reads}): write it again with this stitchkit")


def artifact_format(path: str | os.PathLike, kind: str) -> Format:
    """The format of a safetensors file whose header says ``kind``; a kind this stitchkit does
    not know (a newer one's) is refused in one line."""
    if kind not in ARTIFACTS:
        raise FormatError(f"{path} is a stitchkit file of kind {kind!r}, which this stitchkit does not know "
                          f"(it reads {', '.join(ARTIFACTS)}): written by a newer stitchkit? upgrade stitchkit")
    return ARTIFACTS[kind]


# ---------------------------------------------------------------------------------------------
# every other kind of file stitchkit writes: records, tables, manifests, figures, pages
# ---------------------------------------------------------------------------------------------
RECORD = Format("result record", "stitchkit.result", 1, (1,))  # ``"schema": "stitchkit.result/1"``
RECORDS = Format("results table", "stitchkit.results", 1, (1,))  # a JSON list of result records
COMMAND_OUTPUT = Format("command output (--json)", "stitchkit.output", 1, (1,))  # raw `--json`
BENCHMARK = Format("benchmark summary", "stitchkit.benchmark", 1, (1,))  # benchmark.json
LEARNING_CURVE = Format("learning curve", "stitchkit.learning-curve", 1, (1,))  # examples/learning-curve
EXPLAIN = Format("explain grids", "stitchkit.explain", 1, (1,))  # stitch explain: explain.json, <id>.json
SCORES_CSV_METADATA = Format("score file metadata", "stitchkit.scores-csv-metadata", 1, (1,))
SWEEP_TABLE = Format("sweep table", "stitchkit.sweep", 1, (1,))  # CSV: method, n_anchors, ...
MANIFEST = Format("manifest", "stitchkit.manifest", 1, (1,))  # CSV or JSON lines: id, path or text
ID_FILE = Format("id file", "stitchkit.ids", 1, (1,))  # one id per line, '#' comments
SUITE = Format("benchmark suite", "stitchkit.suite", 1, (1,))  # YAML: name, datasets
PARTS = Format("embed parts folder (an embed not finished yet)", "stitchkit.embed-parts", 1, (1,))
FIGURE = Format("figure (PNG)", "image/png", 1, (1,))
PAGE = Format("report page", "text/html", 1, (1,))
MARKDOWN = Format("Markdown page or table", "text/markdown", 1, (1,))

KINDS = (*FORMATS, RECORD, RECORDS, COMMAND_OUTPUT, BENCHMARK, LEARNING_CURVE, EXPLAIN, SCORES_CSV_METADATA,
         SWEEP_TABLE, MANIFEST, ID_FILE, SUITE, PARTS, FIGURE, PAGE, MARKDOWN)
SCHEMAS = {f.encoding_type: f for f in (RECORD, BENCHMARK, LEARNING_CURVE, EXPLAIN)}  # "schema": "TYPE/VERSION"


@dataclass(frozen=True)
class Identified:
    """What :func:`identify` found: the kind of file and the format version it declares."""

    format: Format
    version: int
