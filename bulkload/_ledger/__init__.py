"""The ledger of scheduled loads (issue #15): which input files were loaded into which
namespace, when, by which run, in which shards and requestIds, so that the same command run
every night over a growing export loads each file once.

Self-contained on purpose: it speaks plain values (keys, sizes, times, ETags; manifest
dicts), so the loader's wiring translates its own types, and nothing here depends on how
the loader is organised. Only ``bulkload._errors`` is imported from the rest of bulkload
(the standard library's ``sqlite3`` does the rest).

::

    identity.py a file's key and identity; how two identities compare
    proof.py    what a run's journal proves loaded (live: Completion; after a crash: a manifest)
    claims.py   who holds a namespace, and whether that process is still alive
    file.py     where the ledger lives, its schema and migrations, opening it (WAL)
    values.py   what the ledger answers (decisions, entries, runs) and the decision policy
    merge.py    ledgers of other machines, added as a union
    store.py    Ledger: begin, decide, record_loaded, repair, finish, forget, entries
"""

from __future__ import annotations

from .claims import Holder as Holder
from .claims import Partition as Partition
from .file import DEFAULT_NAME as DEFAULT_NAME
from .file import ENV as ENV
from .file import SCHEMA_VERSION as SCHEMA_VERSION
from .file import LedgerError as LedgerError
from .file import LedgerLocation as LedgerLocation
from .file import describe_location as describe_location
from .identity import Comparison as Comparison
from .identity import FileIdentity as FileIdentity
from .identity import Verdict as Verdict
from .identity import compare as compare
from .identity import file_md5 as file_md5
from .identity import key_for as key_for
from .identity import remote_etag as remote_etag
from .merge import MergeReport as MergeReport
from .proof import Completion as Completion
from .proof import ProvenLoad as ProvenLoad
from .proof import ProvenRun as ProvenRun
from .proof import proven_from_manifest as proven_from_manifest
from .store import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from .store import DEFAULT_WAIT as DEFAULT_WAIT
from .store import Ledger as Ledger
from .values import Action as Action
from .values import Begun as Begun
from .values import Decision as Decision
from .values import LedgerBusyError as LedgerBusyError
from .values import LoadEntry as LoadEntry
from .values import Outcome as Outcome
from .values import Reason as Reason
from .values import RepairReport as RepairReport
from .values import RunInfo as RunInfo
from .values import new_run_id as new_run_id

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
