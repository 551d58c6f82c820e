"""What each command does, given its parsed options: load (with signals, the resume hint
and --wait), status, wait and merge. The library is imported only when a command runs."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._exit import EXIT_OK, EXIT_REJECTS, EXIT_SIGINT, EXIT_SIGTERM, error

if TYPE_CHECKING:
    from .._config import LoadConfig
    from .._load.run import LoadResult

log = logging.getLogger("bulkload")


def _read_key(args: argparse.Namespace) -> str | None:
    from .._errors import MissingKeyError

    if args.api_key_file is not None:
        try:
            key: str = args.api_key_file.read_text().strip()
        except OSError as exc:
            raise MissingKeyError(
                f"cannot read the API key file {args.api_key_file}: {exc.strerror}"
            ) from None
        if not key:
            raise MissingKeyError(f"the API key file {args.api_key_file} is empty")
        return key
    return os.environ.get("SAFETYKIT_API_KEY") or None


def _config_from(args: argparse.Namespace) -> LoadConfig:
    """The LoadConfig the options ask for: each option's ``dest`` is the field it sets, so a
    new field needs only its option. An option not given leaves the library's default,
    except ``--workers``: not given, the CLI chooses by input size and cores (None)."""
    from dataclasses import fields

    from .._config import LoadConfig

    given = {
        f.name: getattr(args, f.name)
        for f in fields(LoadConfig)
        if getattr(args, f.name, None) is not None
    }
    return LoadConfig(**{"workers": None, **given})


def load(args: argparse.Namespace, argv: list[str]) -> int:
    import asyncio

    from .._runtime import one_malloc_arena

    one_malloc_arena()

    from .._load.loader import Loader
    from .._runtime import run_async
    from ._display import LineDisplay, RichDisplay

    config = _config_from(args)
    loader = Loader(
        args.namespace,
        api_key=None if args.dry_run else _read_key(args),
        base_url=args.base_url,
        work_dir=args.work_dir,
        config=config,
    )
    loader.description = shlex.join(["bulkload", *argv])
    display: Any = None
    if not args.quiet:
        display = RichDisplay(f"{args.namespace}") if sys.stderr.isatty() else LineDisplay()
    loader.on_progress = display
    signals: list[int] = []

    async def run() -> LoadResult | None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(signum: int) -> None:
            signals.append(signum)
            if len(signals) == 1:
                print(
                    f"\nbulkload: stopping — finishing uploads in flight (up to {config.grace:g}s); "
                    "press Ctrl-C again to stop at once",
                    file=sys.stderr,
                    flush=True,
                )
                loader.request_stop()
            else:
                task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            async with loader:
                return await loader.load(args.inputs)
        except asyncio.CancelledError:
            if signals:
                return None
            raise
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    try:
        result = run_async(run())
    finally:
        if display is not None:
            display.close()
    if signals:
        code = EXIT_SIGTERM if signals[0] == signal.SIGTERM else EXIT_SIGINT
        work_dir = loader.work_dir
        resume = ["bulkload", *argv]
        if args.work_dir is None:
            resume += ["--work-dir", str(work_dir)]
        if result is not None and not result.interrupted:
            code = result.exit_code  # everything finished before the signal took effect
        else:
            print(
                f"bulkload: interrupted; the manifest is in {work_dir / 'manifest.json'}. "
                f"To resume: {shlex.join(resume)}",
                file=sys.stderr,
                flush=True,
            )
            if result is not None and args.json:
                _print_json({**result.to_dict(), "exit_code": code})
            return code
    assert result is not None
    if args.wait and not args.dry_run and result.exit_code in (EXIT_OK, EXIT_REJECTS):
        if not args.json:
            _print_summary(result, args)
            print(f"bulkload: waiting for {result.uploaded} request(s) to finish", file=sys.stderr)
        wait_code, waited = follow(
            args, command="wait", manifest=result.work_dir, timeout=None, print_json=False
        )
        final = wait_code if wait_code != EXIT_OK else result.exit_code
        if args.json:
            _print_json({**result.to_dict(), "wait": waited, "exit_code": final})
        return final
    _print_summary(result, args)
    code = result.exit_code
    return code


def merge(args: argparse.Namespace) -> int:
    from .._errors import StateError
    from .._journal import MANIFEST
    from .._partition import merge_manifests, write_merged

    doc = merge_manifests(args.manifests)
    target = args.output / MANIFEST if args.output.is_dir() else args.output
    if any(Path(m["manifest"]).resolve() == target.resolve() for m in doc["merged_from"]):
        raise StateError(f"{target} is one of the manifests being merged; write elsewhere")
    path = write_merged(doc, args.output)
    totals = doc["totals"]
    unfinished = [m["manifest"] for m in doc["merged_from"] if not m["finished_at"]]
    if args.json:
        _print_json({"manifest": str(path), "merged": len(doc["merged_from"]),
                     "unfinished": unfinished, "totals": totals})  # fmt: skip
        return EXIT_OK
    count = doc.get("partition", {}).get("count")
    what = f"{count} partitions" if count else f"{len(doc['merged_from'])} manifests"
    print(
        f"bulkload: merged {what}: {totals['shards']} shard(s), {totals['records']:,} records "
        f"({totals['uploaded']} uploaded, {totals['failed']} failed) into {path}"
    )
    for where in unfinished:
        print(f"  not finished: {where} (rerun its load to finish it, then merge again)")
    print(f"next: bulkload wait {path}")
    return EXIT_OK


def _print_json(doc: dict[str, Any]) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    sys.stdout.flush()


def _print_summary(r: LoadResult, args: argparse.Namespace) -> None:
    if args.json:
        _print_json(r.to_dict())
        return
    from ._summary import load_summary

    print("\n".join(load_summary(r)), file=sys.stdout, flush=True)


def follow(
    args: argparse.Namespace,
    *,
    command: str,
    manifest: Path,
    timeout: float | None,
    print_json: bool = True,
) -> tuple[int, dict[str, Any]]:
    """``status`` and ``wait`` (also ``load --wait``, with its own work dir and no time
    limit): the exit code and the summary. ``args`` gives the shared options."""
    import asyncio

    from .._follow import Follower, StatusChange, WaitResult
    from .._runtime import run_async

    key = _read_key(args)
    follower = Follower(
        manifest,
        api_key=key,
        base_url=args.base_url,
        max_rps=args.max_rps,
        timeout=args.timeout,
        max_retries=args.max_retries,
        ca_bundle=args.ca_bundle,
    )
    quiet = args.quiet or args.json

    def on_change(c: StatusChange) -> None:
        if not quiet:
            extra = f" ({c.data_count} results)" if c.data_count is not None else ""
            why = f": {c.error_summary}" if c.error_summary else ""
            print(
                f"bulkload: shard {c.shard} {c.request_id}: {c.status}{extra}{why}",
                file=sys.stderr,
                flush=True,
            )

    async def run() -> WaitResult:
        async with follower:
            if command == "status":
                return await follower.status()
            return await follower.wait(
                results_dir=args.results, timeout=timeout, on_change=on_change
            )

    try:
        result = run_async(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        error(f"interrupted; rerun `bulkload {command} {manifest}` to go on")
        return EXIT_SIGINT, {}
    code = result.exit_code if command == "wait" else result.status_exit_code
    if args.json:
        if print_json:
            _print_json({**result.to_dict(), "exit_code": code})
        return code, result.to_dict()
    from ._summary import follow_summary

    lines = follow_summary(result, command, manifest)
    print("\n".join(lines), file=sys.stdout, flush=True)
    return code, result.to_dict()
