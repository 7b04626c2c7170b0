"""The on-disk layout of an embedding store, version 1 (its version lives in ``stitchkit.formats``).

An embedding store is an HDF5 file::

    /embeddings     (N, D) float32          one global vector per sample
    /ids            (N,)   UTF-8 string     unique sample ids
    /labels         (N,)   UTF-8 string     optional class label ("" where unknown)
    /texts          (N,)   UTF-8 string     optional input text (text stores)
    /groups         (N,)   UTF-8 string     optional group, e.g. a study id
    /tokens         (N, T, D) float16       optional patch / word tokens (``--tokens``)
    /tokens_mask    (N, T) bool             which tokens are real (texts are padded)
    /failed/ids     (F,)   UTF-8 string     inputs that could not be embedded
    /failed/reasons (F,)   UTF-8 string     why each one failed

Root attributes: ``format`` (``stitchkit.embeddings``), ``format_version``, ``complete``,
``modality`` (image | text), ``model_spec``, ``weights_sha256``, ``dim``, ``preprocessing``
(JSON), ``versions`` (JSON: library versions), ``created`` (ISO time), ``shard`` (``i/N`` or
empty), ``input`` (where the samples came from), ``runtime`` (JSON: torch or ONNX Runtime, with
versions), and for derived stores ``map`` and ``source``.

A plain HDF5 file with only ``embeddings`` and ``ids`` is a valid store of unknown provenance.
"""

from __future__ import annotations

from ..formats import STORE, check_format  # noqa: F401 - the store's entry in the formats table

FORMAT_NAME = STORE.encoding_type
FORMAT_VERSION = STORE.version  # the version written; which are read: STORE.readable

EMBEDDINGS = "embeddings"
IDS = "ids"
LABELS = "labels"
TEXTS = "texts"
GROUPS = "groups"
TOKENS = "tokens"
TOKENS_MASK = "tokens_mask"
FAILED = "failed"
STRING_COLUMNS = (LABELS, TEXTS, GROUPS)
# A sentence store (a row per sentence, `stitch head captions --sentences`) names each row's
# image in this column, and says so in its `pairs_by` attribute.
IMAGE_COLUMN = "image"

# Attributes that say which space the embeddings live in; two stores of the same space agree.
SPACE_ATTRS = ("model_spec", "weights_sha256", "dim")
