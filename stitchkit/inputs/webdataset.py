"""WebDataset tar shards (as img2dataset writes them) listed as samples.

A shard's members ``dir/KEY.EXT`` group into one sample per KEY (the WebDataset rule: the key
ends at the first dot of the file name). The key is the sample id; the image is the member of
the first known image extension; the label comes from ``.cls``, ``.txt`` or a field of
``.json`` (``--label-from``); ``.txt`` is the sample's text. Listing reads each shard's
headers once and records where every member's bytes are, so a DataLoader worker reads a member
with one seek, never unpacking the tar. Nothing is extracted, but a member whose name leaves the
archive's folder (``../x``, ``/etc/x``) or is a link makes the whole shard refused: such a
shard was not written by a WebDataset tool and may be hostile.
"""

from __future__ import annotations

import json
import re
import tarfile
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InputFailure, UsageError
from .registry import InputFormat
from .types import InputOptions, Inputs, Item

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "dcm")
SMALL_MEMBER = 1 << 20  # bytes: a label, text or JSON member larger than this is refused
_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a/{000..002}.tar`` -> a/000.tar a/001.tar a/002.tar; ``{x,y}`` lists; nested left to right."""
    found = _BRACE.search(pattern)
    if not found:
        return [pattern]
    body, head, tail = found.group(1), pattern[: found.start()], pattern[found.end() :]
    ranged = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if ranged:
        a, b = ranged.group(1), ranged.group(2)
        width = len(a) if a.startswith("0") and len(a) > 1 else 0
        step = 1 if int(b) >= int(a) else -1
        options = [str(n).zfill(width) for n in range(int(a), int(b) + step, step)]
    elif "," in body:
        options = body.split(",")
    else:
        raise UsageError(f"input pattern {pattern!r}: braces hold a range {{000..099}} or a list {{a,b}}")
    return [out for opt in options for out in expand_braces(head + opt + tail)]


def expand_sources(sources: list[Any]) -> list[Path] | None:
    """The tar shards named by ``sources``, or None when the input is not tars."""
    names = [str(s) for s in sources]
    expanded = [p for name in names for p in (expand_braces(name) if "{" in name else [name])]
    is_tar = [p.lower().endswith(".tar") for p in expanded]
    if not any(is_tar):
        return None
    if not all(is_tar):
        others = [p for p, t in zip(expanded, is_tar, strict=True) if not t]
        raise UsageError(f"{others[0]} is not a .tar shard: several inputs must all be .tar shards")
    missing = [p for p in expanded if not Path(p).is_file()]
    if missing:
        raise UsageError(f"{len(missing)} of {len(expanded)} shards do not exist (e.g. {missing[0]}): "
                         "check the pattern or the list")
    paths = [Path(p) for p in expanded]
    if len(set(paths)) != len(paths):
        raise UsageError("a shard is named twice in the input list: name each once")
    return paths


def _split_name(name: str) -> tuple[str, str]:
    path = PurePosixPath(name)
    stem, dot, ext = path.name.partition(".")
    key = str(path.parent / stem) if str(path.parent) != "." else stem
    return key, ext.lower() if dot else ""


def _escapes(member: tarfile.TarInfo) -> bool:
    path = PurePosixPath(member.name)
    return member.name.startswith("/") or ".." in path.parts or member.issym() or member.islnk()


def _scan(tar: Path) -> tuple[dict[str, dict[str, tarfile.TarInfo]], str | None]:
    """Members of one shard grouped by key; a note when the shard ends early."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    note = None
    try:
        with tarfile.open(tar, "r:") as tf:
            while True:
                try:
                    member = tf.next()
                except tarfile.ReadError as exc:
                    note = f"{tar} is damaged after {sum(map(len, samples.values()))} members ({exc})"
                    break
                if member is None:
                    break
                if _escapes(member):
                    raise UsageError(
                        f"{tar}: member {member.name!r} is a link or has a path that escapes the archive "
                        "folder: refusing this shard (rebuild it with plain relative member names)"
                    )
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                if not ext:
                    continue
                samples.setdefault(key, {})[ext] = member
    except tarfile.ReadError as exc:
        if not samples:
            raise UsageError(f"{tar} is not a readable uncompressed tar ({exc}): check the shard") from None
        note = f"{tar} is damaged ({exc})"
    return samples, note


def _small(fh: Any, member: tarfile.TarInfo, size_left: int) -> bytes:
    if member.size > SMALL_MEMBER:
        raise InputFailure(f"member {member.name} is {member.size} bytes: too large for a label or text")
    if member.offset_data + member.size > size_left:
        raise InputFailure(f"member {member.name} is cut short: the shard is truncated")
    fh.seek(member.offset_data)
    return fh.read(member.size)


def _label(members: dict[str, tarfile.TarInfo], fh: Any, size: int, label_from: str) -> str:
    source, _, field = label_from.partition(":")
    if source == "json":
        if "json" not in members:
            raise InputFailure("no .json member for --label-from json:" + field)
        try:
            value: Any = json.loads(_small(fh, members["json"], size).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputFailure(f"member {members['json'].name} is not valid JSON ({exc})") from None
        for part in field.split("."):
            if not isinstance(value, dict) or part not in value:
                raise InputFailure(f"member {members['json'].name} has no field {field!r}")
            value = value[part]
        return "" if value is None else str(value)
    if source not in members:
        raise InputFailure(f"no .{source} member for --label-from {source}")
    try:
        return _small(fh, members[source], size).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputFailure(f"member {members[source].name} is not UTF-8 text") from None


def read_shards(tars: list[Path], *, label_from: str | None = None) -> Inputs:
    """List the samples of ``tars`` in shard order (then key order within a shard)."""
    if label_from is not None:
        source, _, field = label_from.partition(":")
        if source not in ("cls", "txt", "json") or (source == "json") != bool(field):
            raise UsageError(f"--label-from {label_from!r}: use cls, txt or json:FIELD")
    items: list[Item] = []
    per_tar: list[tuple[Path, dict[str, dict[str, tarfile.TarInfo]]]] = []
    for tar in tars:
        samples, note = _scan(tar)
        if note:
            warnings.warn(f"{note}: the samples before the damage are read, cut members go to the "
                          "failed table", stacklevel=2)
        per_tar.append((tar, samples))
    any_image = any(ext in IMAGE_EXTS for _, s in per_tar for m in s.values() for ext in m)
    any_text = any("txt" in m for _, s in per_tar for m in s.values())
    if label_from is None and per_tar and all("cls" in m for _, s in per_tar for m in s.values()):
        label_from = "cls"  # img2dataset-style class shards: take the label without a flag
    for tar, samples in per_tar:
        size = tar.stat().st_size
        with open(tar, "rb") as fh:
            for key, members in samples.items():
                item = Item(key, path=tar, container="tar")
                image = next((members[e] for e in IMAGE_EXTS if e in members), None)
                if image is not None:  # else an image model fails it, a text model may not
                    item.member, item.offset, item.size = image.name, image.offset_data, image.size
                try:
                    if "txt" in members:
                        item.text = _small(fh, members["txt"], size).decode("utf-8")
                    if label_from:
                        item.label = _label(members, fh, size, label_from)
                except UnicodeDecodeError:
                    item.error = item.error or f"member {members['txt'].name} is not UTF-8 text"
                except InputFailure as exc:
                    item.error = item.error or str(exc)
                items.append(item)
    columns = (["label"] if label_from else []) + (["text"] if any_text else [])
    modality = "image" if any_image or not any_text else "text"
    source = str(tars[0]) if len(tars) == 1 else f"{tars[0]} (+{len(tars) - 1} shards)"
    return Inputs(items, modality, source, columns, kind="webdataset", shard_by_file=True)


def read_member(item: Item, limit: int | None = None) -> bytes:
    """The bytes of a listed tar member (its first ``limit`` bytes if given), read with one seek."""
    if item.path is None or item.offset is None or item.size is None:
        raise InputFailure(f"sample has no image member (.{', .'.join(IMAGE_EXTS)})")
    want = item.size if limit is None else min(item.size, limit)
    try:
        with open(item.path, "rb") as fh:
            fh.seek(item.offset)
            data = fh.read(want)
    except OSError as exc:
        raise InputFailure(f"cannot read shard {item.path} ({exc.strerror})") from None
    if len(data) < want:
        raise InputFailure(f"tar member {item.member} is cut short ({len(data)} of {item.size} bytes): "
                           "the shard is truncated")
    return data


def _claim(sources: list[str]) -> bool:
    # By name only: `expand_sources` (in `_read`) then says what is wrong with the list.
    return any(p.lower().endswith(".tar") for name in sources
               for p in (expand_braces(name) if "{" in name else [name]))


def _read(sources: list[str], options: InputOptions) -> Inputs:
    tars = expand_sources(sources)
    assert tars is not None  # claimed: at least one name is a .tar
    return read_shards(tars, label_from=options.label_from)


def _fetch(item: Item, limit: int | None) -> tuple[bytes, str]:
    return read_member(item, limit), item.member or ""


FORMAT = InputFormat(
    "webdataset", "WebDataset .tar shards: a list, a glob or a brace pattern `{00000..00099}.tar`; "
    "label from .cls/.txt/.json, text from .txt", "WebDataset .tar shards",
    claim=_claim, read=_read, containers=("tar",), fetch=_fetch, options=("label_from",),
    shards=True, labels=True, texts=True, captions=True,
)
