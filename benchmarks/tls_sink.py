"""The benchmark sink over HTTPS, for the TLS rows: the emulator with ``--discard-bodies``
serving TLS with a certificate from a private CA made on the spot (trustme).

    python -m benchmarks.tls_sink --ca-file CA.pem [--api-key KEY] [--port 0]

Writes the CA's certificate (PEM) to ``--ca-file`` (for ``bulkload --ca-bundle`` and
``curl --cacert``), then prints the base URL (``https://127.0.0.1:PORT``) as its first
line, as ``python -m bulkload.emulator`` does, and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl

import trustme

from bulkload.emulator import Emulator


async def serve(args: argparse.Namespace) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(args.ca_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    emulator = Emulator(
        api_key=args.api_key, port=args.port, discard_bodies=True, ssl_context=context
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with emulator:
        print(emulator.base_url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ca-file", required=True, help="where to write the CA's PEM")
    parser.add_argument("--api-key", default="bench-key")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
