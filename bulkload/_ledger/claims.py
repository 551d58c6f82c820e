"""Who holds a namespace's ledger, and whether they are still alive.

A run *claims* its namespace in the ledger (a row of the ``claims`` table, written in a
``BEGIN IMMEDIATE`` transaction, so SQLite's own lock orders two runs that start at once).
A claim names its process by host, pid and a token that survives pid reuse: on Linux the
boot id and the process's start time (``/proc/PID/stat``, field 22). A claim is *stale* when,
on this host, its process is gone, is a zombie, or the pid now belongs to another process
(or the machine rebooted): a run killed with SIGKILL leaves a stale claim that the next run
takes over. A claim from another host cannot be checked from here (WAL needs the ledger on
a local disk, so another host only appears when the file was copied or shared wrongly): it
is honoured until ``Ledger.release`` clears it.

Partitions ``I/N`` of one logical run share a namespace: a claim with a partition is
compatible with live claims of the same group (the same input list split the same N ways)
and other indexes. Every other combination waits.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Partition:
    """Worker ``index`` of ``count`` (from 0) of one logical run; ``group`` names the
    logical run: partitions of one run share the ledger only when their groups are equal."""

    index: int
    count: int
    group: str

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"partition must satisfy 0 <= I < N, got {self.index}/{self.count}")

    @classmethod
    def of_inputs(cls, index: int, count: int, inputs: Iterable[Any]) -> Partition:
        """The partition of a run over ``inputs`` (e.g. ``(key, size)`` pairs of the whole
        input list, before it is split): workers that see the same list get the same group."""
        digest = hashlib.sha256(repr((count, [repr(i) for i in inputs])).encode()).hexdigest()
        return cls(index, count, digest[:16])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, slots=True)
class Holder:
    """A claim on a namespace: which run, which process, since when."""

    namespace: str
    run_id: str
    host: str
    pid: int
    token: str | None
    claimed_at: str
    work_dir: str | None
    partition: Partition | None

    def describe(self) -> str:
        """For messages: "run R (pid 4242 on etl-1, since …, work dir …, partition 1/4)"."""
        parts = [f"pid {self.pid} on {self.host}", f"since {self.claimed_at}"]
        if self.work_dir:
            parts.append(f"work dir {self.work_dir}")
        if self.partition is not None:
            parts.append(f"partition {self.partition}")
        return f"run {self.run_id} ({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "run_id": self.run_id,
            "host": self.host,
            "pid": self.pid,
            "claimed_at": self.claimed_at,
            "work_dir": self.work_dir,
            "partition": (
                None
                if self.partition is None
                else {"index": self.partition.index, "count": self.partition.count}
            ),
        }


@dataclass(frozen=True, slots=True)
class Me:
    """This process, as a claim names it."""

    host: str
    pid: int
    token: str | None


def this_process() -> Me:
    pid = os.getpid()
    return Me(socket.gethostname(), pid, _token(pid))


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, str] | None:
    """The state letter and start time (clock ticks after boot) of ``pid``, from
    ``/proc/PID/stat``; None where there is no /proc or no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = raw[raw.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]


def _token(pid: int) -> str | None:
    boot = _boot_id()
    st = _stat(pid)
    if boot is None or st is None:
        return None  # not Linux: the pid alone identifies the process
    return f"{boot}/{st[1]}"


def stale_reason(holder: Holder, me: Me) -> str | None:
    """Why ``holder``'s claim is stale (its process is gone), or None when it may be alive."""
    if holder.host != me.host:
        return None  # cannot be checked from here: honoured until released
    if holder.token is not None and me.token is not None:
        boot = holder.token.split("/", 1)[0]
        if boot != me.token.split("/", 1)[0]:
            return "the machine has restarted since"
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return f"process {holder.pid} no longer exists"
    except PermissionError:
        pass  # alive, as another user
    st = _stat(holder.pid)
    if st is not None:
        if st[0] in ("Z", "X"):
            return f"process {holder.pid} has exited"
        if holder.token is not None and holder.token.split("/", 1)[1] != st[1]:
            return f"pid {holder.pid} now belongs to another process"
    return None


def compatible(partition: Partition | None, live: Sequence[Holder]) -> bool:
    """Whether a run of ``partition`` may hold the namespace beside the ``live`` claims."""
    if not live:
        return True
    if partition is None:
        return False
    for h in live:
        p = h.partition
        if p is None or p.group != partition.group or p.count != partition.count:
            return False
        if p.index == partition.index:
            return False
    return True


def conflict(partition: Partition | None, live: Sequence[Holder]) -> str:
    """In words, why ``live`` claims keep a run of ``partition`` waiting."""
    if partition is None:
        return "another run holds it"
    for h in live:
        p = h.partition
        if p is None:
            return "a run that is not partitioned holds it"
        if p.group != partition.group or p.count != partition.count:
            return (
                f"partition {p} of another run holds it (a different input list or "
                "partition count: workers of one run must list the same inputs)"
            )
        if p.index == partition.index:
            return f"partition {p} is already being loaded"
    return "another run holds it"  # pragma: no cover - compatible() said no for a reason


def live_claims(
    db: sqlite3.Connection,
    namespace: str,
    holder: str,
    me: Me,
    recovered: list[tuple[Holder, str]],
) -> list[Holder]:
    """Other holders' claims on ``namespace`` whose process may be alive (``holder`` is the
    asking ledger's own name); stale ones are deleted, in the caller's transaction, and
    added to ``recovered`` with why."""
    live = []
    rows = db.execute(
        "SELECT * FROM claims WHERE namespace = ? AND holder != ?", (namespace, holder)
    ).fetchall()
    for row in rows:
        claim = holder_of(row)
        reason = stale_reason(claim, me)
        if reason is None:
            live.append(claim)
            continue
        db.execute(
            "DELETE FROM claims WHERE namespace = ? AND holder = ?", (namespace, row["holder"])
        )
        recovered.append((claim, reason))
    return live


def partition_of(row: sqlite3.Row) -> Partition | None:
    """The partition columns of a ``runs`` or ``claims`` row."""
    if row["part_count"] is None:
        return None
    return Partition(row["part_index"], row["part_count"], row["part_group"])


def holder_of(row: sqlite3.Row) -> Holder:
    return Holder(
        namespace=row["namespace"], run_id=row["run_id"], host=row["host"], pid=row["pid"],
        token=row["token"], claimed_at=row["claimed_at"], work_dir=row["work_dir"],
        partition=partition_of(row),
    )  # fmt: skip
