"""What a head or a map was fitted on, and which scored rows it saw: recorded where a piece is
made, checked where it scores.

A head trained on 611 of NIH's 1,000 images scores those 611 as well as any held-out image; an
AUC over all 1,000 is not a held-out figure. Each piece therefore records the rows it was
fitted on (:class:`FittedOn`): a head every image it trained on (its validation pairs included:
they chose the checkpoint, and a residual head's starting map was fitted on them), a map the
anchors it was fitted on (the held-out anchors too where it was refitted on them). Per image
store it was fitted from (one *part* each: the pairs of ``--pairs``), it keeps

* the ids, as a sorted array of distinct 64-bit hashes (:func:`hash_keys`: BLAKE2b, 8 bytes, of
  the UTF-8 id), a uint64 tensor ``fitted_on.N.ids`` in the file; 377,000 MIMIC images are 3 MB;
* the groups (patients, the store's ``groups`` column) of those rows, hashed alike, as
  ``fitted_on.N.groups``; absent where the store has no groups.

Collisions: two distinct ids share a hash with probability 2**-64; over ``n`` fitted and ``m``
scored ids, the expected number of false matches is at most ``n * m / 2**64`` (377,000 ×
377,000 gives 8e-9). A false match can only make a check stricter, never hide a shared row.

Classification (:func:`record_overlap`) counts, per piece, the scored rows that it was fitted
on and the patients it shares with them. Group names are compared only within one data set:
NIH's patient "17" is not covid-notes' patient "17". A part's groups are compared with the
query's where the query *store* holds at least one image of that part (the same data set,
whichever rows are scored); otherwise the record says the patients were not compared. A head
that trained on scored rows, or on other images of their patients, is refused
(:class:`OverlapError`, exit 2) unless ``allow_overlap``; a map's anchors among the scored rows
are counted and noted, not refused: anchors are unlabelled, so they leak no label.

Files written before this record (no ``fitted_on`` in the header) load as before; their overlap
is ``unknown`` in the record and a note says it could not be checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError

HASH = "blake2b-64"
"""How ids and groups are hashed: BLAKE2b with an 8-byte digest of the UTF-8 string, read as a
little-endian unsigned 64-bit integer."""
META_KEY = "fitted_on"
"""The header key of a head's or a map's record (its tensors are ``fitted_on.N.ids`` / ``.groups``)."""
UNKNOWN = "unknown"


class OverlapError(UsageError):
    """Scored rows trained the head (or share its training patients): not a held-out result.
    ``line``: the counts alone (``N of M rows trained head X (K patients shared)``)."""

    def __init__(self, message: str, line: str = "") -> None:
        super().__init__(message)
        self.line = line or message


def hash_keys(keys: Iterable[Any]) -> np.ndarray:
    """The distinct hashes (sorted uint64) of ``keys`` (ids or groups, read as strings)."""
    digest = b"".join(hashlib.blake2b(str(k).encode("utf-8"), digest_size=8).digest() for k in keys)
    return np.unique(np.frombuffer(digest, dtype="<u8").astype(np.uint64))


@dataclass(frozen=True)
class Part:
    """The rows of one image store a piece was fitted on: hashed ids and groups (None: the store
    has no groups), how many rows, and the store's path (for messages)."""

    ids: np.ndarray
    groups: np.ndarray | None
    n_rows: int
    store: str = ""
    input: str = ""  # the store's ``input`` (``nih:/data/nih``): which data set it was read from

    @classmethod
    def of(cls, ids: Sequence[Any] | np.ndarray, groups: Sequence[Any] | np.ndarray | None = None,
           store: Any = "", input: str | None = None) -> Part:
        return cls(hash_keys(ids), None if groups is None else hash_keys(groups), len(ids), str(store), input or "")


@dataclass(frozen=True)
class FittedOn:
    """What a head or a map was fitted on: one :class:`Part` per image store; ``parts`` None
    for a file written before this was recorded (its overlap is unknown)."""

    parts: tuple[Part, ...] | None

    @classmethod
    def of(cls, parts: Iterable[Part]) -> FittedOn:
        return cls(tuple(parts))

    @property
    def known(self) -> bool:
        return self.parts is not None

    def tensors(self) -> dict[str, np.ndarray]:
        """The tensors a file holds (uint64), by name."""
        out = {}
        for n, part in enumerate(self.parts or ()):
            out[f"{META_KEY}.{n}.ids"] = part.ids
            if part.groups is not None:
                out[f"{META_KEY}.{n}.groups"] = part.groups
        return out

    def meta(self) -> dict[str, Any]:
        """The header's record: the hash, and per part its store, rows and distinct ids and groups."""
        return {"hash": HASH, "parts": [
            {"store": p.store, "n_rows": p.n_rows, "n_ids": len(p.ids),
             "n_groups": None if p.groups is None else len(p.groups), "input": p.input} for p in self.parts or ()]}

    @classmethod
    def read(cls, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None) -> FittedOn:
        """From a file's tensors and its header's ``fitted_on`` (unknown where it has none)."""
        if not meta or "parts" not in meta:
            return cls(None)
        if meta.get("hash") != HASH:
            raise UsageError(f"fitted ids hashed with {meta.get('hash')!r}, which this stitchkit does not know "
                             "(written by a newer stitchkit?): upgrade stitchkit")
        parts = []
        for n, p in enumerate(meta["parts"]):
            groups = tensors.get(f"{META_KEY}.{n}.groups")
            parts.append(Part(np.asarray(tensors[f"{META_KEY}.{n}.ids"], dtype=np.uint64),
                              None if groups is None else np.asarray(groups, dtype=np.uint64),
                              int(p.get("n_rows", 0)), str(p.get("store", "")), str(p.get("input") or "")))
        return cls(tuple(parts))


def model_tensors(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A file's tensors without the fitted-on record (what the model itself is made of)."""
    return {k: v for k, v in tensors.items() if not k.startswith(META_KEY + ".")}


# -- at classification ------------------------------------------------------------------------
@dataclass
class Scored:
    """The rows a classification scores: their ids' and groups' hashes, one per row, and the
    whole query store's ids (hashed once, when a part's data set must be recognised)."""

    ids: np.ndarray
    groups: np.ndarray | None
    store_ids: Any  # the store's ids (all rows), hashed on first use

    @classmethod
    def of(cls, store: Any, rows: np.ndarray) -> Scored:
        ids = np.asarray(store.ids)[rows]
        groups = store.groups[rows] if store.groups is not None else None
        return cls(_row_hashes(ids), None if groups is None else _row_hashes(groups), store.ids)

    def store_hashes(self) -> np.ndarray:
        if not isinstance(self.store_ids, np.ndarray) or self.store_ids.dtype != np.uint64:
            self.store_ids = hash_keys(self.store_ids)
        return self.store_ids


def _row_hashes(keys: np.ndarray) -> np.ndarray:
    """One hash per row (not made distinct), in the rows' order."""
    digest = b"".join(hashlib.blake2b(str(k).encode("utf-8"), digest_size=8).digest() for k in keys)
    return np.frombuffer(digest, dtype="<u8").astype(np.uint64)


def overlap(fitted: FittedOn, scored: Scored) -> dict[str, Any]:
    """How the scored rows overlap what ``fitted`` was fitted on: ``rows`` scored,
    ``rows_in_training`` (rows it was fitted on), ``patients_shared`` (distinct groups of the
    scored rows among its groups, in the data sets it recognises), ``rows_of_shared_patients``
    (scored rows of those patients it was not fitted on itself) and ``patients_compared``
    (why not, where they were not); ``unknown`` for a file that records none."""
    n = len(scored.ids)
    if not fitted.known:
        return {"checked": False, "rows": n, "rows_in_training": None, "patients_shared": None,
                "why": f"{UNKNOWN}: the file records not what it was fitted on (written before stitchkit recorded it)"}
    in_training = np.zeros(n, dtype=bool)
    shared_rows = np.zeros(n, dtype=bool)
    compared, not_compared = [], []
    for part in fitted.parts:
        in_training |= np.isin(scored.ids, part.ids)
        if part.groups is None or scored.groups is None:
            not_compared.append(f"{Path(part.store).name or 'a store'}: "
                                + ("it had no groups" if part.groups is None else "the query store has no groups"))
        elif not np.isin(scored.store_hashes(), part.ids).any():
            not_compared.append(f"{Path(part.store).name or 'a store'}: another data set (the query store "
                                "holds none of its images)")
        else:
            compared.append(part.store)
            shared_rows |= np.isin(scored.groups, part.groups)
    patients = 0 if scored.groups is None else len(np.unique(scored.groups[shared_rows]))
    return {"checked": True, "rows": n, "rows_in_training": int(in_training.sum()), "patients_shared": patients,
            "rows_of_shared_patients": int((shared_rows & ~in_training).sum()),
            "patients_compared": not not_compared or "; ".join(not_compared), "hash": HASH}


def overlap_line(found: Mapping[str, Any], what: str) -> str:
    """``N of M rows trained head X (K patients shared, R more rows of them)``."""
    more = found.get("rows_of_shared_patients") or 0
    shared = found["patients_shared"]
    patients = ("" if not shared and found.get("patients_compared") is not True else
                f" ({shared} patients shared" + (f", {more} more rows of them" if more else "") + ")")
    return f"{found['rows_in_training']} of {found['rows']} rows {what}{patients}"


def _fitted_on(pieces: Iterable[Any]) -> FittedOn:
    """The union of the pieces' records (an ensemble's heads, a chain's maps); unknown when any is."""
    parts: list[Part] = []
    for piece in pieces:
        fitted = getattr(piece, "fitted_on_", None) or FittedOn(None)
        if not fitted.known:
            return FittedOn(None)
        parts.extend(fitted.parts)
    return FittedOn.of(parts)


def record_overlap(plan: Any, rows: np.ndarray, allow_overlap: bool, hint: str = "--ids") -> None:
    """Count the scored ``rows`` that the plan's head and map were fitted on into its
    composition (``overlap``) and notes; refuse a head that trained on them (or on their
    patients) unless ``allow_overlap``. ``plan``: a
    :class:`~stitchkit.zeroshot.classify_plan.ClassifyPlan` whose head and map are open;
    ``hint``: how the caller selects held-out rows (the refusal names it)."""
    if plan.head is None and plan.mapper is None:
        return
    scored = Scored.of(plan.store, rows)
    if plan.head is not None and "head" in plan.composition:
        found = overlap(_fitted_on(getattr(plan.head, "heads", [plan.head])), scored)
        plan.composition["head"]["overlap"] = found
        if found["checked"] and (found["rows_in_training"] or found["patients_shared"]):
            line = overlap_line(found, f"trained head {plan.head_name}")
            if not allow_overlap:
                raise OverlapError(f"{line}; score held-out rows with {hint} or pass --allow-overlap", line=line)
            plan.notes.append(f"{line}: scored anyway (--allow-overlap); these metrics are not held-out")
        elif not found["checked"]:
            plan.notes.append(f"head {plan.head_name}: overlap with its training rows {found['why']}")
    if plan.mapper is not None and "map" in plan.composition:
        # A chain's adaptation map (stitch adapt) is fitted on the query's domain, unlabelled: the
        # map between the spaces is the one whose anchors are counted.
        chain = getattr(plan.mapper, "maps", None) or [plan.mapper]
        found = overlap(_fitted_on(m for m in chain if "adaptation" not in (getattr(m, "anchors_", None) or {})),
                        scored)
        plan.composition["map"]["overlap"] = found
        if found["checked"] and (found["rows_in_training"] or found["patients_shared"]):
            plan.notes.append(overlap_line(found, f"are anchors of map {plan.composition['map']['path']}")
                              + ": unlabelled, so no label leaked")


def overlap_summary(composition: Mapping[str, Any]) -> dict[str, Any]:
    """The flat counts a classification's result carries: rows that trained the head and the
    patients shared with it, rows that are map anchors (None: not recorded or no such piece)."""
    head = (composition.get("head") or {}).get("overlap") or {}
    fmap = (composition.get("map") or {}).get("overlap") or {}
    return {"rows_in_head_training": head.get("rows_in_training"),
            "head_patients_shared": head.get("patients_shared"),
            "map_anchors_scored": fmap.get("rows_in_training"),
            "map_patients_shared": fmap.get("patients_shared")}
