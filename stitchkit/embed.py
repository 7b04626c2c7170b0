"""The embedding job: inputs + encoder -> a complete store, resumable after any crash.

Work is cut into numbered batches fixed by the input list, so a re-run recomputes exactly the
batches that are missing, with the same contents, and gives values equal to an uninterrupted
run. Each finished batch is one small HDF5 file in ``OUT.parts/`` that appears atomically;
``OUT`` itself is assembled from them at the end and only then carries ``complete = True``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .embed_options import EmbedOptions
from .encoders import Encoder
from .errors import InputFailure, LockedError, StitchError, UsageError
from .fileio import atomic_output, check_writable_dir, pid_running
from .inputs import PIXEL_POLICY, Inputs, Item, input_format, load_item
from .store import EmbeddingStore, StoreWriter
from .store.grid import pool_token_grid
from .store.parts import PartRows, read_part_index, read_part_rows, write_part
from .store.store import base_attrs


class ProgressSink:
    """What the job reports to; the CLI passes a rich bar or plain log lines."""

    def start(self, total: int, done: int = 0) -> None: ...

    def advance(self, n: int) -> None: ...


@dataclass
class EmbedResult:
    path: Path
    samples: int
    failed: int
    dim: int
    seconds: float
    batches_resumed: int
    already_complete: bool = False
    runtime: str = "torch"  # what ran the forward pass: torch | onnx
    device: str = "cpu"  # where it ran: cpu | cuda:N (ONNX Runtime: always the CPU)
    export_seconds: float | None = None  # ONNX export of this run (None: cached, or torch)

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: use i/N with 0 <= i < N, e.g. 3/16") from None
    if not 0 <= i < n:
        raise UsageError(f"--shard {text!r}: need 0 <= i < N")
    return i, n


def select_shard(items: list[Item], shard: tuple[int, int] | None, *, by_file: bool = False) -> list[Item]:
    """Deterministic split: sort all ids, cut into N contiguous blocks, keep block i.

    ``by_file`` (tar shards) cuts the sorted list of files instead, so each job reads whole tars.
    """
    if shard is None:
        return items
    i, n = shard
    if by_file:
        files = sorted({str(it.path) for it in items})
        if len(files) < n:
            raise UsageError(f"--shard {i}/{n}: the input has only {len(files)} tar shards; use N <= {len(files)}")
        keep_files = set(np.array_split(np.array(files, dtype=object), n)[i])
        return [it for it in items if str(it.path) in keep_files]
    ids = sorted(it.id for it in items)
    keep = set(np.array_split(np.array(ids, dtype=object), n)[i])
    return [it for it in items if it.id in keep]


def plan_batches(items: Sequence[Item], modality: str, batch_size: int) -> list[np.ndarray]:
    """Positions of each batch. Texts go longest first so padding is small; images in order."""
    if modality == "text":
        order = sorted(range(len(items)), key=lambda i: -len(items[i].text or ""))
    else:
        order = list(range(len(items)))
    return [np.array(order[a : a + batch_size]) for a in range(0, len(order), batch_size)]


class _Batches(torch.utils.data.Dataset):
    """Batch k decoded in a DataLoader worker: (k, collated batch or None, ok positions, failures)."""

    def __init__(self, items: list[Item], batches: list[np.ndarray], todo: list[int], encoder: Encoder):
        self.items, self.batches, self.todo, self.encoder = items, batches, todo, encoder

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, i: int) -> tuple[int, Any, list[int], list[tuple[int, str]], list[str]]:
        k = self.todo[i]
        prepared, ok, failed, mappings = [], [], [], []
        for pos in self.batches[k]:
            item = self.items[pos]
            try:
                raw, how = load_sample(item, self.encoder.modality)
                prepared.append(self.encoder.prepare(raw))
                ok.append(int(pos))
                mappings.append(how)
            except InputFailure as exc:
                failed.append((int(pos), str(exc)))
            except Exception as exc:  # noqa: BLE001 - one bad input must not stop the job
                failed.append((int(pos), f"{type(exc).__name__}: {exc}"))
        return k, self._collate(prepared) if prepared else None, ok, failed, mappings

    def _collate(self, prepared: list[Any]) -> Any:
        # In a worker, default_collate stacks image tensors straight into shared memory (the
        # same values as torch.stack): the batch reaches the main process without another copy.
        if (torch.utils.data.get_worker_info() is not None and type(self.encoder).collate is Encoder.collate
                and all(isinstance(p, torch.Tensor) for p in prepared)):
            return torch.utils.data.default_collate(prepared)
        return self.encoder.collate(prepared)


# Decode workers beside a forward pass that keeps every core busy: one per this many of its
# threads (decoding + preparing a 224 px Kermany JPEG takes ≈ 0.7 ms of one core, against ≈ 6.7
# ms of CPU per image for Lite0's ONNX forward at 300 images/s on 2 threads; Lite2's 260 px
# upscale ≈ 2 ms against a forward 3× heavier: docs/speed.md), at this niceness, so that they run
# on what the forward leaves idle instead of stalling its threads. Where cores are free (a GPU
# run) as many as are free, at most MAX_AUTO_WORKERS.
THREADS_PER_DECODER = 4
DECODE_NICE = 19
MAX_AUTO_WORKERS = 8


def auto_workers(cores: int, forward_threads: int) -> int:
    """``--workers auto``: the cores the forward pass leaves free (at most MAX_AUTO_WORKERS),
    and at least one per THREADS_PER_DECODER of its threads; those share its cores at lower
    priority (the documented split, docs/speed.md)."""
    needed = max(1, math.ceil(forward_threads / THREADS_PER_DECODER))
    return max(needed, min(cores - forward_threads, MAX_AUTO_WORKERS))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_workers(workers: int | None, encoder: Encoder) -> int:
    """The decode worker processes of a run: ``workers`` (None: auto) for images; texts are
    tokenised in the main process."""
    if encoder.modality != "image":
        return 0
    return workers if workers is not None else auto_workers(_cores(), encoder.forward_threads())


def _decode_worker_init(_: int) -> None:
    """A decode worker that shares the forward's cores runs at lower priority: the forward's
    threads take the cores first, the worker what they leave idle."""
    with contextlib.suppress(OSError):
        os.nice(DECODE_NICE)


def load_sample(item: Item, modality: str) -> tuple[Any, str]:
    """What the encoder's ``prepare`` takes for one sample, and how its pixels were mapped."""
    if modality == "image":
        return load_item(item)
    if item.error:
        raise InputFailure(item.error)
    if item.text is None:
        raise InputFailure("sample has no text (a .txt member or a text column)")
    return item.text, "text"


def _identity(x: Any) -> Any:
    return x


@contextlib.contextmanager
def _exclusive(parts: Path, out: Path) -> Iterator[None]:
    parts.mkdir(parents=True, exist_ok=True)
    with open(parts / "lock", "a+") as fh:
        deadline = time.monotonic() + 20
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                pid = fh.read().strip() or "?"
                # A writer killed with -9 leaves its forked DataLoader workers holding the lock;
                # they notice their parent is gone and exit within seconds, so wait for them.
                if pid.isdigit() and not pid_running(int(pid)) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise LockedError(
                    f"another process (pid {pid}) is writing {out}: wait for it to finish or use another -o"
                ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield


def _fingerprint(items: list[Item], encoder: Encoder, options: EmbedOptions, grey_range: str) -> dict[str, Any]:
    ids = hashlib.sha256("\n".join(it.id for it in items).encode()).hexdigest()
    grey = {"grey_range": grey_range} if encoder.modality == "image" else {}  # image pixels only
    side = options.token_side  # only when set: runs and stores from before the option read as full
    grid = {"token_grid": f"{side}x{side}"} if side is not None else {}
    return {
        "model_spec": encoder.spec.text,
        "weights_sha256": encoder.weights_sha256(),
        "batch_size": options.batch_size,
        "tokens": options.tokens,
        "ids_sha256": ids,
        "dtype": str(encoder.dtype),
        "runtime": encoder.runtime,
        **grey,
        **grid,
    }


def _adopt_unfinished_runtime(parts: Path, encoder: Encoder) -> None:
    """Continue an unfinished run on the runtime that started it.

    ONNX Runtime and torch agree to cosine 0.99999 but not bit for bit, and a resumed run must
    equal an uninterrupted one: ``auto`` takes the runtime of the parts already written; an
    explicit other ``--runtime`` is refused (one line saying which to use).
    """
    run_file = parts / "run.json"
    try:
        previous = json.loads(run_file.read_text()).get("runtime", "torch")
    except (OSError, ValueError):
        return  # no unfinished run (or an unreadable one, which _check_parts reports)
    if previous == encoder.runtime:
        return
    if encoder.runtime_requested == "auto" and previous in encoder.runtimes:
        from .encoders.onnx_runtime import select_runtime

        try:
            select_runtime(encoder, previous)
        except UsageError as exc:
            raise UsageError(f"{parts} holds an unfinished run made with --runtime {previous}, which "
                             f"cannot run here ({exc}): delete {parts} to start over") from None
        if encoder.runtime == previous:
            return
    raise UsageError(
        f"{parts} holds an unfinished run made with --runtime {previous}: re-run with --runtime "
        f"{previous} (or auto) to continue it, or delete {parts} to start over"
    )


def _write_part(path: Path, ok: list[int], out: Any, failed: list[tuple[int, str]],
                mappings: list[str] | None = None, *, side: int | None = None, what: str = "the model") -> None:
    """One finished batch as a part file (:mod:`stitchkit.store.parts`): ``out`` is the
    encoder's output for the inputs at positions ``ok`` (None when all failed); with ``side``
    its patch tokens pooled onto side×side (:func:`stitchkit.store.grid.pool_token_grid`)."""
    rows = None
    if out is not None:
        has_tokens = out.tokens is not None
        tokens = out.tokens.detach().cpu() if has_tokens else None
        if has_tokens and side is None:
            # float16 as the part stores them, by torch: a CNN's tokens are a transposed view of
            # its feature map, which numpy's astype converts 7x slower (64 Lite0 rows: 10 ms)
            tokens = tokens.to(torch.float16, memory_format=torch.contiguous_format)
        rows = PartRows(out.embeddings.detach().cpu().numpy(),
                        tokens.numpy() if has_tokens else None,
                        out.mask.cpu().numpy() if has_tokens else None)
        if has_tokens and side is not None:
            rows.tokens, rows.tokens_mask, model_side = pool_token_grid(rows.tokens, rows.tokens_mask, side, what)
            rows.token_grid, rows.model_token_grid = f"{side}x{side}", f"{model_side}x{model_side}"
    write_part(path, ok, rows, failed, mappings)


@dataclass
class EmbedJob:
    """One embedding job, shared by the local and the Ray engine: its batches, where finished
    batches go, and what to do with failed inputs."""

    inputs: Inputs
    encoder: Encoder
    out: Path
    items: list[Item]
    batches: list[np.ndarray]
    fingerprint: dict[str, Any]
    options: EmbedOptions
    t0: float

    @property
    def tokens(self) -> bool:
        return self.options.tokens

    @property
    def progress(self) -> ProgressSink | None:
        return self.options.progress

    @property
    def parts(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    @contextlib.contextmanager
    def run(self) -> Iterator[list[int]]:
        """Hold the lock, yield the batch numbers still to do, then assemble the store."""
        with _exclusive(self.parts, self.out):
            _check_parts(self.parts, self.fingerprint, self.out)
            finished = {int(p.stem.split("-")[1]) for p in self.parts.glob("part-*.h5")}
            self.resumed = len(finished)
            if self.progress:
                self.progress.start(len(self.items), sum(len(self.batches[k]) for k in finished))
            yield [k for k in range(len(self.batches)) if k not in finished]
            self.counts = _assemble(self.parts, len(self.batches), self.items, self.inputs,
                                    self.encoder, self.out, self.tokens, self.options.shard, self.fingerprint)
        shutil.rmtree(self.parts, ignore_errors=True)

    def report_failures(self, failed: list[tuple[int, str]]) -> None:
        for pos, reason in failed:
            if self.options.strict:  # an unreadable input is bad input: a usage error (exit 2)
                raise UsageError(
                    f"input {self.items[pos].where()} failed: {reason} (drop --strict to record and skip it)"
                )
            if self.options.on_failure:
                self.options.on_failure(self.items[pos].id, reason)
            else:
                warnings.warn(f"skipping {self.items[pos].where()}: {reason}", stacklevel=3)

    def save(self, k: int, ok: list[int], result: Any, failed: list[tuple[int, str]],
             mappings: list[str] | None = None) -> None:
        """Write batch ``k``'s part, then tell the progress sink."""
        self.write_part(k, ok, result, failed, mappings)
        if self.progress:
            self.progress.advance(len(ok) + len(failed))

    def write_part(self, k: int, ok: list[int], result: Any, failed: list[tuple[int, str]],
                   mappings: list[str] | None = None) -> None:
        _write_part(self.parts / f"part-{k:06d}.h5", ok, result, failed, mappings,
                    side=self.options.token_side, what=self.encoder.spec.text)

    def result(self) -> EmbedResult:
        n, n_failed = self.counts
        return EmbedResult(self.out, n, n_failed, self.encoder.dim, time.perf_counter() - self.t0, self.resumed,
                           runtime=self.encoder.runtime, export_seconds=self.encoder.export_seconds,
                           device=str(self.encoder.device))


def plan_job(inputs: Inputs, encoder: Encoder, out: str | Path, options: EmbedOptions, t0: float
             ) -> EmbedJob | EmbedResult:
    """Check the job and plan its batches; an EmbedResult when ``out`` already holds it."""
    out = Path(out)
    batch_size, shard = options.batch_size, options.shard
    if inputs.modality == "image" and encoder.modality == "text" and "text" in inputs.columns \
            and input_format(inputs.kind).captions:
        # Shards and datasets carry images and captions together: a text model embeds the captions.
        inputs = replace(inputs, modality="text")
    if inputs.modality != encoder.modality:
        raise UsageError(
            f"the input holds {inputs.modality}s but {encoder.spec.text!r} is a {encoder.modality} "
            "model: pick a model of the same modality"
        )
    check_writable_dir(out)
    items = select_shard(inputs.items, shard, by_file=inputs.shard_by_file)
    if not items:
        raise UsageError(f"shard {shard} holds no samples: use fewer shards")
    if options.token_grid is not None and encoder.modality != "image":
        raise UsageError(f"token_grid (--token-grid {options.token_grid}) pools image patch grids; "
                         f"{encoder.spec.text!r} is a {encoder.modality} model")
    if options.token_side is not None:
        _check_token_grid(encoder, options.token_side)
    _adopt_unfinished_runtime(out.with_name(out.name + ".parts"), encoder)
    fingerprint = _fingerprint(items, encoder, options, inputs.grey_range)
    if out.exists() and not options.overwrite:
        done = _already_done(out, fingerprint, items)
        if done is not None:
            shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)
            return EmbedResult(out, done[0], done[1], encoder.dim, time.perf_counter() - t0, 0, True,
                               runtime=encoder.runtime, device=str(encoder.device))
        raise UsageError(
            f"{out} already exists and holds another embedding run: pass --overwrite or choose another -o"
        )
    return EmbedJob(inputs, encoder, out, items, plan_batches(items, encoder.modality, batch_size),
               fingerprint, options, t0)


def _check_token_grid(encoder: Encoder, side: int) -> None:
    """Refuse a ``--token-grid`` the model's tokens cannot be pooled onto (finer than its patch
    grid, or no square grid), in one line before anything is written: the model's grid is
    what one forward pass of a blank image gives."""
    from PIL import Image

    with torch.inference_mode():
        out = encoder.encode(encoder.collate([encoder.prepare(Image.new("RGB", (64, 64)))]), tokens=True)
    if out.tokens is None:
        raise UsageError(f"{encoder.spec.text!r} gives no tokens: token_grid (--token-grid) has nothing to pool")
    pool_token_grid(out.tokens.detach().float().cpu().numpy(), out.mask.cpu().numpy(), side, encoder.spec.text)


def embed_store(inputs: Inputs, encoder: Encoder, out: str | Path, options: EmbedOptions | None = None,
                **settings: Any) -> EmbedResult:
    """Embed ``inputs`` into the store ``out``; resumes from ``out.parts/`` when it exists.

    ``settings`` are :class:`~stitchkit.embed_options.EmbedOptions` fields (``batch_size``,
    ``tokens``, ``workers``, ``shard``, ``progress``, ...) applied over ``options``. The encoder
    runs on the runtime ``load_encoder`` chose; an unfinished run continues on the runtime it
    started with.
    """
    options = replace(options or EmbedOptions(), **settings)
    tokens = options.tokens
    job = plan_job(inputs, encoder, out, options, time.perf_counter())
    if isinstance(job, EmbedResult):
        return job
    workers = decode_workers(options.workers, encoder)
    with job.run() as todo:
        loader = torch.utils.data.DataLoader(
            _Batches(job.items, job.batches, todo, encoder),
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
            prefetch_factor=2 if workers else None,
            worker_init_fn=_decode_worker_init if workers + encoder.forward_threads() > _cores() else None,
            # Page-locked batches copy to a GPU without a staging copy (the encoders copy with
            # non_blocking=True); on the CPU pinning would only cost.
            pin_memory=encoder.device.type == "cuda" and encoder.modality == "image",
        )
        with torch.inference_mode(), _PartWriter(job) as parts:
            for k, batch, ok, failed, mappings in loader:
                job.report_failures(failed)
                result = encoder.encode(batch, tokens=tokens) if batch is not None else None
                parts.put(k, ok, result, failed, mappings)
    return job.result()


class _PartWriter:
    """Writes each finished batch's part on a thread of its own while the next batch runs.

    One part in flight: ``put`` first waits for the previous one (re-raising its error) and
    tells the progress sink of it from the calling thread, so a sink that stops the run
    (Ctrl-C) leaves exactly the parts it was told of, as a plain loop would. Writing a part
    (float16 tokens, HDF5 in memory, fsync of the file and its folder) then costs the forward
    only the CPU it takes; the fsyncs just wait (h5py holds the GIL, ONNX Runtime and torch
    release it while they compute).
    """

    def __init__(self, job: EmbedJob) -> None:
        self.job = job
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="stitch-parts")
        self.pending: tuple[Future[None], int] | None = None

    def put(self, k: int, ok: list[int], result: Any, failed: list[tuple[int, str]], mappings: list[str]) -> None:
        self.wait()
        self.pending = (self.pool.submit(self._write, k, ok, result, failed, mappings), len(ok) + len(failed))

    def _write(self, *args: Any) -> None:
        with torch.inference_mode():  # thread-local: the results are inference tensors
            self.job.write_part(*args)

    def wait(self) -> None:
        if self.pending is None:
            return
        future, n = self.pending
        self.pending = None
        future.result()
        if self.job.progress:
            self.job.progress.advance(n)

    def __enter__(self) -> _PartWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self.wait()
        finally:  # after an error the part in flight still finishes (atomically), unreported
            self.pool.shutdown(wait=True)


def _already_done(out: Path, fingerprint: dict[str, Any], items: list[Item]) -> tuple[int, int] | None:
    """(samples, failed) when ``out`` is the complete result of this very job, else None."""
    try:
        store = EmbeddingStore(out, allow_incomplete=True)
    except StitchError:
        return None
    with store:
        attrs = store.attrs
        same = (
            store.complete
            and attrs.get("model_spec") == fingerprint["model_spec"]
            and attrs.get("weights_sha256") == fingerprint["weights_sha256"]
            and attrs.get("ids_sha256") == fingerprint["ids_sha256"]
            # --grey-range: stores and text stores from before the option count as its default
            and json.loads(attrs.get("pixel_mapping") or "{}").get("grey_range", "image")
            == fingerprint.get("grey_range", "image")
            # tokens asked for: the store must hold them, on the grid asked for
            and (not fingerprint["tokens"] or store.has_tokens
                 and attrs.get("token_grid") == fingerprint.get("token_grid"))
        )
        return (len(store), len(store.failed)) if same else None


def _check_parts(parts: Path, fingerprint: dict[str, Any], out: Path) -> None:
    run_file = parts / "run.json"
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        previous.setdefault("runtime", "torch")  # runs started before ONNX Runtime was wired in
        if "grey_range" in fingerprint:
            previous.setdefault("grey_range", "image")  # and before --grey-range (its default)
        if previous != fingerprint:
            diff = sorted(k for k in {*fingerprint, *previous} if previous.get(k) != fingerprint.get(k))
            raise UsageError(
                f"{parts} holds an unfinished run with other settings ({', '.join(diff)}): "
                f"re-run with the same options, or delete {parts} to start over"
            )
        return
    for stale in parts.glob("part-*.h5"):
        stale.unlink()
    with atomic_output(run_file) as tmp:
        tmp.write_text(json.dumps(fingerprint, indent=1))


def _assemble(
    parts: Path,
    n_batches: int,
    items: list[Item],
    inputs: Inputs,
    encoder: Encoder,
    out: Path,
    tokens: bool,
    shard: tuple[int, int] | None,
    fp: dict[str, Any],
) -> tuple[int, int]:
    """Write the final store in input order from the part files; returns (samples, failed)."""
    files = [parts / f"part-{k:06d}.h5" for k in range(n_batches)]
    positions, failed, max_t, token_dim = [], [], 0, encoder.dim
    mapped: Counter[str] = Counter()
    grids: set[tuple[str | None, str | None]] = set()  # (token_grid, model_token_grid) of the parts
    for f in files:
        part = read_part_index(f)
        positions.append(part.positions)
        mapped.update(part.mappings)
        failed.extend(part.failed)
        if part.token_shape:
            max_t = max(max_t, part.token_shape[0])
            token_dim = part.token_shape[1]
            grids.add((part.token_grid, part.model_token_grid))
    if tokens and (len(grids) > 1 or any(g != fp.get("token_grid") for g, _ in grids)):
        said = ", ".join(sorted(g or "the model's" for g, _ in grids))
        this = fp.get("token_grid") or "the model's"
        raise UsageError(f"{parts} holds tokens on other grids ({said}) than this run's ({this}): "
                         f"delete {parts} to start over")
    token_grid, model_token_grid = next(iter(grids)) if grids else (None, None)
    ok_sorted = np.sort(np.concatenate(positions)) if positions else np.zeros(0, np.int64)
    row_of = np.full(len(items), -1, dtype=np.int64)
    row_of[ok_sorted] = np.arange(len(ok_sorted))
    # label/group/text go to the format's named columns; extras (DICOM tags) keep their names.
    columns = [c for c in ("label", "group", "text") if c in inputs.columns]
    extras = [c for c in inputs.columns if c not in ("label", "group", "text")]
    names = {"label": "labels", "group": "groups", "text": "texts", **{c: c for c in extras}}
    attrs = base_attrs(
        modality=encoder.modality,
        model_spec=encoder.spec.text,
        weights_sha256=fp["weights_sha256"],
        ids_sha256=fp["ids_sha256"],
        preprocessing=json.dumps(encoder.preprocessing()),
        input=inputs.source,
        shard=f"{shard[0]}/{shard[1]}" if shard else "",
        n_inputs=len(items),
        runtime=json.dumps(encoder.runtime_info()),
        pixel_mapping=json.dumps({"policy": PIXEL_POLICY, "grey_range": inputs.grey_range,
                                  "counts": dict(sorted(mapped.items()))})
        if encoder.modality == "image" else None,
        token_grid=token_grid if tokens else None,
        model_token_grid=model_token_grid if tokens else None,
    )
    token_shape = (max_t, token_dim) if tokens and max_t else None
    with StoreWriter(
        out, dim=encoder.dim, attrs=attrs, columns=[names[c] for c in [*columns, *extras]],
        token_shape=token_shape, size=len(ok_sorted),
    ) as writer:
        for f, pos in zip(files, positions, strict=True):
            if not len(pos):
                continue
            rows = read_part_rows(f, tokens=token_shape is not None)
            chosen = [items[p] for p in pos]
            writer.put(
                row_of[pos],
                [it.id for it in chosen],
                rows.embeddings,
                columns={**{names[c]: [getattr(it, c) or "" for it in chosen] for c in columns},
                         **{c: [it.extra.get(c, "") for it in chosen] for c in extras}},
                tokens=rows.tokens,
                tokens_mask=rows.tokens_mask,
            )
        failed.sort()
        writer.add_failed([(items[p].id, r) for p, r in failed])
    return len(ok_sorted), len(failed)


@dataclass
class TextEmbeddings:
    embeddings: np.ndarray
    tokens: np.ndarray | None = None
    mask: np.ndarray | None = None


def embed_texts(
    encoder: Encoder, texts: Sequence[str], *, tokens: bool = False, batch_size: int = 64
) -> TextEmbeddings:
    """Embed a few texts in memory (prompts), in input order."""
    items = [Item(str(i), text=t) for i, t in enumerate(texts)]
    emb = np.zeros((len(items), encoder.dim), dtype=np.float32)
    toks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with torch.inference_mode():
        for pos in plan_batches(items, "text", batch_size):
            out = encoder.encode([items[p].text for p in pos], tokens=tokens)
            emb[pos] = out.embeddings.cpu().numpy()
            if tokens and out.tokens is not None:
                toks.append((pos, out.tokens.cpu().numpy(), out.mask.cpu().numpy()))
    if not toks:
        return TextEmbeddings(emb)
    t = max(tk.shape[1] for _, tk, _ in toks)
    all_tok = np.zeros((len(items), t, encoder.dim), dtype=np.float32)
    all_mask = np.zeros((len(items), t), dtype=bool)
    for pos, tk, mk in toks:
        all_tok[pos, : tk.shape[1]] = tk
        all_mask[pos, : mk.shape[1]] = mk
    return TextEmbeddings(emb, all_tok, all_mask)
