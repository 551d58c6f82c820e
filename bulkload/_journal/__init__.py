"""⑤ The work dir: what a run did, written down before it acts.

::

    events.py    the journal's vocabulary: one typed event per step (the crash-safety argument)
    state.py     RunState: the journal appended and replayed; the manifest, a view of it;
                 the work dir's lock and file names
"""

from . import events
from .state import (
    DRY_RUN_DIR,
    DUPLICATES,
    JOURNAL,
    MANIFEST,
    REJECTS,
    RUNS_DIR,
    SHARDS_DIR,
    STATE_DIR,
    RunState,
    ShardEntry,
    archive_run,
    load_manifest,
    lock_work_dir,
    now_iso,
    peek_work_dir,
    unlock_work_dir,
)

__all__ = [
    "DRY_RUN_DIR",
    "DUPLICATES",
    "JOURNAL",
    "MANIFEST",
    "REJECTS",
    "RUNS_DIR",
    "SHARDS_DIR",
    "STATE_DIR",
    "RunState",
    "ShardEntry",
    "archive_run",
    "events",
    "load_manifest",
    "lock_work_dir",
    "now_iso",
    "peek_work_dir",
    "unlock_work_dir",
]
