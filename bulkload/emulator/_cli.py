"""Command line of the emulator: ``python -m bulkload.emulator`` or ``bulkload emulator``.

The first line on stdout is the base URL (flushed at once), so a parent process can read
it and connect; the emulator then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from dataclasses import MISSING, fields
from typing import Any

from ._faults import Faults
from ._s3 import ETAG_MODES
from ._server import Emulator
from ._sigv4 import DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY, DEFAULT_SESSION_TOKEN

__all__ = ["add_arguments", "main", "run"]

API_KEY_ENV = "BULKLOAD_EMULATOR_API_KEY"


def _fault_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the emulator's options (one per fault knob too) on ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV, "test-key"),
        help=f"the API key to accept (default: ${API_KEY_ENV} or 'test-key')",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="keep objects and requests here, across restarts (default: a temp dir)",
    )
    parser.add_argument(
        "--ingest-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds a request stays 'ingesting' after its object arrives",
    )
    parser.add_argument(
        "--url-ttl", type=float, default=12 * 3600, metavar="S", help="upload URL lifetime"
    )
    parser.add_argument(
        "--results-ttl", type=float, default=3600, metavar="S", help="results data_url lifetime"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault decisions")
    parser.add_argument(
        "--discard-bodies",
        action="store_true",
        help="sink mode for benchmarks: read accepted PUT bodies and drop them (counted, "
        "not hashed or stored); ETag 'discarded-<size>', results downloads answer 404",
    )
    s3 = parser.add_argument_group("the fake bucket (SigV4 pre-signed upload URLs)")
    s3.add_argument(
        "--aws-access-key-id",
        default=DEFAULT_ACCESS_KEY_ID,
        metavar="AKID",
        help=f"the fake bucket's access key id (default: {DEFAULT_ACCESS_KEY_ID})",
    )
    s3.add_argument(
        "--aws-secret-access-key",
        default=DEFAULT_SECRET_ACCESS_KEY,
        metavar="SECRET",
        help="its secret (default: a fixed fake one, so URLs stay valid across restarts)",
    )
    s3.add_argument(
        "--aws-session-token",
        default=DEFAULT_SESSION_TOKEN,
        metavar="TOKEN",
        help="'' for none (default: a fake STS-like token full of + / =, so that clients "
        "must send upload URLs byte for byte)",
    )
    s3.add_argument("--region", default="us-east-1", help="signing region (default: us-east-1)")
    s3.add_argument(
        "--bucket",
        default="bulkload-emulator",
        help="bucket name in the upload URLs' paths (default: bulkload-emulator)",
    )
    s3.add_argument(
        "--sign-content-type",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sign content-type;host (the PUT must send application/json), or host only",
    )
    s3.add_argument(
        "--etag-mode",
        choices=ETAG_MODES,
        default="md5",
        help="how stored PUTs are answered: md5 (ETag = MD5, SSE-S3), sse-kms, "
        "sse-kms-dsse, sse-c (opaque ETag, encryption headers) or opaque (opaque ETag, no "
        "headers) (default: md5)",
    )
    s3.add_argument(
        "--clock-skew",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds added to the emulator's clock when it issues and checks URLs",
    )
    group = parser.add_argument_group("fault injection")
    for f in fields(Faults):
        if not f.init:
            continue
        help_text = str(f.metadata.get("help", ""))
        if f.name == "fail_ids":
            group.add_argument(
                "--fail-id",
                dest="fault_fail_ids",
                action="append",
                default=[],
                metavar="ID",
                help=help_text + " (repeatable)",
            )
            continue
        assert f.default is not MISSING
        choices = f.metadata.get("choices")
        group.add_argument(
            _fault_flag(f.name),
            dest=f"fault_{f.name}",
            type=type(f.default),
            default=f.default,
            choices=choices,
            metavar="SHAPE" if choices else "N" if isinstance(f.default, int) else "X",
            help=f"{help_text}: {', '.join(choices)} (default: {f.default})"
            if choices
            else f"{help_text} (default: {f.default})",
        )


def _faults_from(args: argparse.Namespace) -> Faults:
    values: dict[str, Any] = {}
    for f in fields(Faults):
        if f.init:
            value = getattr(args, f"fault_{f.name}")
            values[f.name] = set(value) if f.name == "fail_ids" else value
    return Faults(**values)


async def _serve(args: argparse.Namespace) -> None:
    emulator = Emulator(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        ingest_delay=args.ingest_delay,
        url_ttl=args.url_ttl,
        results_ttl=args.results_ttl,
        faults=_faults_from(args),
        seed=args.seed,
        discard_bodies=args.discard_bodies,
        aws_access_key_id=args.aws_access_key_id,
        aws_secret_access_key=args.aws_secret_access_key,
        aws_session_token=args.aws_session_token or None,
        region=args.region,
        bucket=args.bucket,
        sign_content_type=args.sign_content_type,
        clock_skew_s=args.clock_skew,
        etag_mode=args.etag_mode,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with emulator:
            print(emulator.base_url, flush=True)
            print(f"emulator data dir: {emulator.data_dir}", file=sys.stderr, flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    """Serve with parsed ``args`` until SIGINT/SIGTERM; the exit code."""
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"emulator: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bulkload.emulator",
        description="Local emulator of the SafetyKit Data API and S3 pre-signed PUT store.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
