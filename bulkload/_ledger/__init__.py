"""The ledger of scheduled loads (issue #15): which input files were loaded into which
namespace, when, by which run, in which shards and requestIds, so that the same command run
every night over a growing export loads each file once.

Self-contained on purpose: it speaks plain values (keys, sizes, times, ETags; manifest
dicts), so the loader's wiring translates its own types, and nothing here depends on how
the loader is organised. Only ``bulkload._errors`` is imported from the rest of bulkload
(the standard library's ``sqlite3`` does the rest).

::

    _identity   a file's key and identity; how two identities compare
    _proof      what a run's journal proves loaded (live: Completion; after a crash: a manifest)
    _claims     who holds a namespace, and whether that process is still alive
    _file       where the ledger lives, its schema and migrations, opening it (WAL)
    _values     what the ledger answers (decisions, entries, runs) and the decision policy
    _merge      ledgers of other machines, added as a union
    _store      Ledger: begin, decide, record_loaded, repair, finish, forget, entries
"""

from __future__ import annotations

from ._claims import Holder as Holder
from ._claims import Partition as Partition
from ._file import DEFAULT_NAME as DEFAULT_NAME
from ._file import ENV as ENV
from ._file import SCHEMA_VERSION as SCHEMA_VERSION
from ._file import LedgerError as LedgerError
from ._file import LedgerLocation as LedgerLocation
from ._file import describe_location as describe_location
from ._identity import Comparison as Comparison
from ._identity import FileIdentity as FileIdentity
from ._identity import Verdict as Verdict
from ._identity import compare as compare
from ._identity import file_md5 as file_md5
from ._identity import key_for as key_for
from ._identity import remote_etag as remote_etag
from ._merge import MergeReport as MergeReport
from ._proof import Completion as Completion
from ._proof import ProvenLoad as ProvenLoad
from ._proof import ProvenRun as ProvenRun
from ._proof import proven_from_manifest as proven_from_manifest
from ._store import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._store import DEFAULT_WAIT as DEFAULT_WAIT
from ._store import Ledger as Ledger
from ._values import Action as Action
from ._values import Begun as Begun
from ._values import Decision as Decision
from ._values import LedgerBusyError as LedgerBusyError
from ._values import LoadEntry as LoadEntry
from ._values import Outcome as Outcome
from ._values import Reason as Reason
from ._values import RepairReport as RepairReport
from ._values import RunInfo as RunInfo
from ._values import new_run_id as new_run_id

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WAIT",
    "ENV",
    "SCHEMA_VERSION",
    "Action",
    "Begun",
    "Comparison",
    "Completion",
    "Decision",
    "FileIdentity",
    "Holder",
    "Ledger",
    "LedgerBusyError",
    "LedgerError",
    "LedgerLocation",
    "LoadEntry",
    "MergeReport",
    "Outcome",
    "Partition",
    "ProvenLoad",
    "ProvenRun",
    "Reason",
    "RepairReport",
    "RunInfo",
    "Verdict",
    "compare",
    "describe_location",
    "file_md5",
    "key_for",
    "new_run_id",
    "proven_from_manifest",
    "remote_etag",
]
