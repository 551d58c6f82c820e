"""Load on a Dask cluster: one loader per partition, each a resumable Dask task.

::

    import bulkload.dask

    manifest = bulkload.dask.load(
        "products", ["s3://exports/2024/*.jsonl.gz"], npartitions=8,
        work_root="/shared/runs/products", client=client, api_key=key,
    )

Each partition ``I`` of ``N`` is one task running an ordinary :class:`bulkload.Loader` in
its own work dir, ``work_root/part-I-of-N``. Files are split as ``load --partition I/N``
splits them (by size, the same on every worker); a ``dask.bag`` of records or a
``dask.dataframe`` is loaded partition by partition with ``Loader.load_records``. A task
that fails (an exception, shards that failed after all retries) is retried by Dask
(``retries``), and a task whose worker died is rerun by the scheduler: either way the rerun
resumes from the partition's work dir, so nothing is uploaded twice. Calling ``load`` again
with the same ``work_root`` resumes every partition likewise.

At the end the partitions' manifests are merged into ``work_root/manifest.json`` (which
``bulkload status``/``wait`` accept) and returned. If some partitions still failed,
:class:`PartitionError` says which and why; the merged manifest (when every partition got
as far as writing one) marks them.

``work_root`` must be a directory every worker can write and the caller can read (a shared
file system, or the local disk of a single-machine cluster). The API key travels inside
each task, wrapped so that no repr, log or dashboard shows it; when ``api_key`` is not
given it is read from ``SAFETYKIT_API_KEY`` here, on the client.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._config import Endpoint
from ._errors import BulkloadError, ConfigError, PartitionError, StateError
from ._partition import merge_manifests, write_merged
from ._redact import Secret

__all__ = ["PartitionError", "load", "partition_dir"]


class PartitionFailed(BulkloadError):
    """Raised inside a task whose load left shards failed or unfinished, so that Dask
    retries it (a retry resumes from the partition's work dir)."""


def partition_dir(work_root: str | os.PathLike[str], index: int, count: int) -> Path:
    return Path(work_root) / f"part-{index}-of-{count}"


def load(
    namespace: str,
    data: Any,
    *,
    work_root: str | os.PathLike[str],
    npartitions: int | None = None,
    client: Any = None,
    retries: int = 2,
    **loader_kwargs: Any,
) -> dict[str, Any]:
    """Load ``data`` into ``namespace`` with one task per partition; the merged manifest.

    ``data`` is an INPUT or a list of INPUTs (files, directories, globs, ``s3://`` …), a
    ``dask.bag.Bag`` of records (mappings), or a ``dask.dataframe.DataFrame``.
    ``npartitions`` defaults to the cluster's worker count for files, and to the
    collection's own partitions otherwise (given, the collection is repartitioned).
    ``client`` is a ``distributed.Client``; without one, the current client, else a
    ``LocalCluster`` for the duration of the call. ``loader_kwargs`` go to each
    :class:`bulkload.Loader` (``api_key``, ``base_url``, ``config``, any LoadConfig field).

    Raises PartitionError when a partition still failed after ``retries`` retries.
    On cancellation (Ctrl-C): running tasks are cancelled; rerun to resume.
    """
    try:
        # Typed as Any: distributed's own annotations are partial.
        distributed: Any = importlib.import_module("distributed")
    except ImportError:
        raise ConfigError(
            "bulkload.dask needs dask.distributed: pip install 'bulkload[dask]'"
        ) from None
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")
    if "work_dir" in loader_kwargs or "partition" in loader_kwargs:
        raise ConfigError("bulkload.dask sets work_dir and partition itself; give work_root")
    # Resolved here, on the client, as every command resolves them: the workers'
    # environments need not hold the key or the base URL.
    endpoint = Endpoint.resolve(
        api_key=loader_kwargs.pop("api_key", None),
        base_url=loader_kwargs.pop("base_url", None),
        need_key=False,
    )
    loader_kwargs["base_url"] = endpoint.base_url
    secret = endpoint.api_key if endpoint.api_key else None
    root = Path(work_root)
    own_cluster = None
    if client is None:
        try:
            client = distributed.get_client()
        except ValueError:
            n = npartitions or min(os.cpu_count() or 1, 4)
            own_cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
            )
            client = distributed.Client(own_cluster)
    try:
        futures, count = _submit(
            client, namespace, data, root, npartitions, retries, secret, loader_kwargs
        )
        try:
            distributed.wait(futures)
        except BaseException:
            client.cancel(futures)
            raise
        failures: dict[int, BaseException] = {}
        for index, future in enumerate(futures):
            if future.status != "finished":
                failures[index] = future.exception() or RuntimeError(future.status)
    finally:
        if own_cluster is not None:
            client.close()
            own_cluster.close()
    return _merge(root, count, failures)


def _submit(
    client: Any,
    namespace: str,
    data: Any,
    root: Path,
    npartitions: int | None,
    retries: int,
    secret: Secret | None,
    kwargs: dict[str, Any],
) -> tuple[list[Any], int]:
    import uuid

    dask: Any = importlib.import_module("dask")

    kind = _kind(data)
    # Readable in the dashboard; unique, so that a rerun is never served a cached result.
    tag = uuid.uuid4().hex[:8]
    if kind == "files":
        specs = [os.fspath(data)] if isinstance(data, str | os.PathLike) else list(data)
        if not specs:
            raise ConfigError("no inputs: give at least one file, directory, glob or URL")
        # Resolve here first: a bad INPUT fails now, once, not in every task.
        from ._inputs import resolve_inputs

        resolve_inputs(specs, storage_options=kwargs.get("storage_options"))
        count = npartitions or max(1, len(client.scheduler_info().get("workers", {})))
        futures = []
        for i in range(count):
            args = (namespace, specs, i, count, partition_dir(root, i, count), secret, kwargs)
            key = f"bulkload-{namespace}-part-{i}-of-{count}-{tag}"
            futures.append(client.submit(_load_files, *args, key=key, retries=retries, pure=False))
        return futures, count
    if npartitions is not None and npartitions != data.npartitions:
        data = data.repartition(npartitions=npartitions)
    count = data.npartitions
    task = _load_records if kind == "bag" else _load_frame
    parts = data.to_delayed()
    delayed = [
        dask.delayed(task, pure=False)(
            part, namespace, i, count, partition_dir(root, i, count), secret, kwargs
        )
        for i, part in enumerate(parts)
    ]
    return list(client.compute(delayed, retries=retries)), count


def _kind(data: Any) -> str:
    if isinstance(data, str | os.PathLike) or (
        isinstance(data, Sequence) and all(isinstance(d, str | os.PathLike) for d in data)
    ):
        return "files"
    module = type(data).__module__
    if module.startswith("dask.bag"):
        return "bag"
    if module.startswith(("dask.dataframe", "dask_expr")):
        return "dataframe"
    raise ConfigError(
        f"bulkload.dask.load takes INPUT paths, a dask.bag or a dask.dataframe, not {type(data)}"
    )


# -- the tasks (run on the workers) ------------------------------------------------------


def _loader_kwargs(
    work_dir: Path, index: int, count: int, secret: Secret | None, kwargs: dict[str, Any]
) -> dict[str, Any]:
    return {
        **kwargs,
        "api_key": secret.reveal() if secret is not None else None,
        "work_dir": work_dir,
        "partition": (index, count),
    }


def _outcome(index: int, count: int, result: Any) -> dict[str, Any]:
    if result.failed or result.interrupted:
        raise PartitionFailed(
            f"partition {index}/{count}: {result.failed} shard(s) failed "
            f"({'interrupted' if result.interrupted else 'after all retries'}); see "
            f"{result.manifest_path}. A retry resumes from {result.work_dir}."
        )
    doc: dict[str, Any] = result.to_dict()
    return doc


def _load_files(
    namespace: str,
    specs: list[str],
    index: int,
    count: int,
    work_dir: Path,
    secret: Secret | None,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    from ._load.loader import load

    result = load(namespace, specs, **_loader_kwargs(work_dir, index, count, secret, kwargs))
    return _outcome(index, count, result)


def _load_records(
    records: Iterable[Any],
    namespace: str,
    index: int,
    count: int,
    work_dir: Path,
    secret: Secret | None,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    from ._load.loader import Loader
    from ._runtime import run_async

    async def main() -> Any:
        async with Loader(
            namespace, **_loader_kwargs(work_dir, index, count, secret, kwargs)
        ) as loader:
            return await loader.load_records(records)

    return _outcome(index, count, run_async(main()))


def _load_frame(
    frame: Any,
    namespace: str,
    index: int,
    count: int,
    work_dir: Path,
    secret: Secret | None,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    import pyarrow as pa

    from ._inputs import table_rows

    table = pa.Table.from_pandas(frame, preserve_index=False)
    return _load_records(table_rows(table), namespace, index, count, work_dir, secret, kwargs)


# -- after ------------------------------------------------------------------------------------


def _merge(root: Path, count: int, failures: dict[int, BaseException]) -> dict[str, Any]:
    dirs = [partition_dir(root, i, count) for i in range(count)]
    merged: dict[str, Any] | None
    why: StateError | None = None
    try:
        merged = merge_manifests(dirs)
    except StateError as exc:
        if not failures:
            raise
        merged, why = None, exc
    else:
        for entry in merged["merged_from"]:
            failure = failures.get(entry["partition"])
            if failure is not None:
                entry["error"] = f"{type(failure).__name__}: {failure}"
        merged["work_dir"] = str(root)
        write_merged(merged, root)
    if failures:
        listed = "; ".join(
            f"partition {i}/{count}: {type(e).__name__}: {e}" for i, e in sorted(failures.items())
        )
        where = f"the merged manifest is {root / 'manifest.json'}" if merged else f"({why})"
        raise PartitionError(
            f"{len(failures)} of {count} partition(s) did not finish: {listed}; {where}. "
            "Call bulkload.dask.load again with the same work_root to resume them.",
            failures=failures,
            manifest=merged,
        )
    assert merged is not None
    return merged
