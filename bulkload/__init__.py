"""bulkload: load very large datasets into SafetyKit through its import API.

The public surface is what this module exports; everything in ``bulkload._*`` may change.
Names are imported on first use, so that ``bulkload --help`` does not pay for aiohttp.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._redact import RedactingFilter as _RedactingFilter
from ._version import __version__ as __version__

# Every message bulkload logs passes through the redactor (signed URLs are credentials).
logging.getLogger("bulkload").addFilter(_RedactingFilter())

if TYPE_CHECKING:
    from ._config import LoadConfig as LoadConfig
    from ._errors import ApiError as ApiError
    from ._errors import AuthError as AuthError
    from ._errors import BulkloadError as BulkloadError
    from ._errors import ConfigError as ConfigError
    from ._errors import DiskSpaceError as DiskSpaceError
    from ._errors import ExitCode as ExitCode
    from ._errors import PartitionError as PartitionError
    from ._errors import SourceError as SourceError
    from ._errors import StateError as StateError
    from ._errors import TooManyRejectsError as TooManyRejectsError
    from ._errors import UsageError as UsageError
    from ._errors import WorkerError as WorkerError
    from ._follow import Follower as Follower
    from ._follow import StatusChange as StatusChange
    from ._follow import WaitResult as WaitResult
    from ._ledger import Ledger as Ledger
    from ._ledger import LedgerBusyError as LedgerBusyError
    from ._ledger import LedgerError as LedgerError
    from ._load.loader import Loader as Loader
    from ._load.loader import load as load
    from ._load.progress import Progress as Progress
    from ._load.run import LoadResult as LoadResult
    from ._partition import merge_manifests as merge_manifests
    from ._partition import partition_inputs as partition_inputs

_WHERE = {
    "LoadConfig": "._config",
    "ApiError": "._errors",
    "AuthError": "._errors",
    "BulkloadError": "._errors",
    "ConfigError": "._errors",
    "DiskSpaceError": "._errors",
    "ExitCode": "._errors",
    "PartitionError": "._errors",
    "SourceError": "._errors",
    "StateError": "._errors",
    "TooManyRejectsError": "._errors",
    "UsageError": "._errors",
    "WorkerError": "._errors",
    "Follower": "._follow.follower",
    "StatusChange": "._follow.follower",
    "WaitResult": "._follow.follower",
    "Ledger": "._ledger.store",
    "LedgerBusyError": "._ledger.values",
    "LedgerError": "._ledger.file",
    "merge_manifests": "._partition",
    "partition_inputs": "._partition",
    "Loader": "._load.loader",
    "LoadResult": "._load.run",
    "load": "._load.loader",
    "Progress": "._load.progress",
}

__all__ = sorted([*_WHERE, "__version__"])


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bulkload' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    if getattr(value, "__module__", "").startswith("bulkload._"):
        # Reprs, tracebacks and docs say bulkload.Loader, not where it lives today (as httpx
        # does); pickles still resolve, through this same function.
        value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
