"""Fault knobs of the emulator, and the seeded injector that turns them into decisions.

A knob named ``<kind>_first_n`` makes the next N eligible calls fail; assigning it (also
at runtime, ``emu.faults.put_503_first_n = 2``) arms N fresh failures. A knob named
``<kind>_rate`` makes each eligible call fail with that probability, drawn from a
``random.Random`` seeded with ``(seed, kind)``: the k-th call of a kind gets the same
decision on every run, whatever the other endpoints are doing meanwhile.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "FAULT_KINDS",
    "IMPORT_MALFORMED_SHAPES",
    "STATUS_MALFORMED_SHAPES",
    "FaultInjector",
    "Faults",
]

#: Every kind the injector knows, with the knobs it reads (``<kind>_first_n``, and
#: ``<kind>_rate`` when the kind has one).
FAULT_KINDS: tuple[str, ...] = (
    "import_429",
    "import_5xx",
    "import_malformed",
    "status_5xx",
    "status_malformed",
    "put_503",
    "put_500",
    "put_drop",
    "put_damage",
    "expired_url",
    "expired_data_url",
    "results_cut",
    "results_stall",
    "hang",
)

#: How an answer can be malformed (see ``_malformed``): shapes any answer can take...
_ANY_ANSWER = ("html", "truncated-json", "short-body", "empty", "json-array")
#: ...and those of the import (upload-url) answer and of the status answers.
IMPORT_MALFORMED_SHAPES: tuple[str, ...] = (
    *_ANY_ANSWER,
    "upload-url-missing",
    "upload-url-null",
    "upload-url-relative",
    "upload-url-s3-uri",
    "request-id-missing",
    "request-id-null",
    "expires-at-unparseable",
)
STATUS_MALFORMED_SHAPES: tuple[str, ...] = (
    *_ANY_ANSWER,
    "status-missing",
    "status-null",
    "status-not-string",
)
#: A ``*_shape`` knob's value that takes every shape in turn.
CYCLE = "cycle"


def _knob(default: Any, help: str, *, choices: tuple[str, ...] = ()) -> Any:
    metadata: dict[str, Any] = {"help": help}
    if choices:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


@dataclass(kw_only=True, eq=False)
class Faults:
    """Fault injection settings; every field may be changed while the emulator runs.

    Eligible calls are those that would otherwise succeed: a 401 or 400 answer is never
    replaced by an injected fault, so the faults stay deterministic whatever the client
    sends.
    """

    import_429_first_n: int = _knob(0, "answer the next N import calls with 429")
    import_429_rate: float = _knob(0.0, "answer this fraction of import calls with 429")
    retry_after_s: float = _knob(
        1.0,
        "delay announced by a 429: Retry-After (seconds, rounded up, as HTTP wants an "
        "integer) and retry-after-ms (exact)",
    )
    import_5xx_first_n: int = _knob(0, "answer the next N import calls with a 5xx")
    import_5xx_rate: float = _knob(0.0, "answer this fraction of import calls with a 5xx")
    import_5xx_status: int = _knob(500, "status code of an injected import 5xx")
    status_5xx_first_n: int = _knob(0, "answer the next N status / download-url calls with a 5xx")
    status_5xx_rate: float = _knob(
        0.0, "answer this fraction of status / download-url calls with a 5xx"
    )
    status_5xx_status: int = _knob(500, "status code of an injected status 5xx")
    import_malformed_first_n: int = _knob(
        0, "answer the next N import calls 200 with a malformed answer (see *_shape)"
    )
    import_malformed_rate: float = _knob(
        0.0, "answer this fraction of import calls 200 with a malformed answer"
    )
    import_malformed_shape: str = _knob(
        CYCLE,
        "how an import answer is malformed; 'cycle' takes each shape in turn",
        choices=(CYCLE, *IMPORT_MALFORMED_SHAPES),
    )
    status_malformed_first_n: int = _knob(
        0, "answer the next N status / download-url calls 200 with a malformed answer"
    )
    status_malformed_rate: float = _knob(
        0.0, "answer this fraction of status / download-url calls with a malformed answer"
    )
    status_malformed_shape: str = _knob(
        CYCLE,
        "how a status / download-url answer is malformed; 'cycle' takes each shape in turn",
        choices=(CYCLE, *STATUS_MALFORMED_SHAPES),
    )
    put_503_first_n: int = _knob(0, "answer the next N PUTs with 503 SlowDown")
    put_503_rate: float = _knob(0.0, "answer this fraction of PUTs with 503 SlowDown")
    put_500_first_n: int = _knob(0, "answer the next N PUTs with 500 InternalError")
    put_500_rate: float = _knob(0.0, "answer this fraction of PUTs with 500 InternalError")
    put_drop_first_n: int = _knob(
        0, "drop the connection of the next N PUTs halfway through the body"
    )
    put_drop_rate: float = _knob(
        0.0, "drop the connection of this fraction of PUTs halfway through the body"
    )
    put_damage_first_n: int = _knob(
        0,
        "flip the middle byte of the next N PUT bodies on their way in: S3 stores and "
        "hashes what arrived, so the ETag is not the MD5 the client sent",
    )
    put_damage_rate: float = _knob(
        0.0, "flip the middle byte of this fraction of PUT bodies on their way in"
    )
    expired_url_first_n: int = _knob(0, "issue the next N upload URLs already expired")
    expired_data_url_first_n: int = _knob(0, "issue the next N results data_urls already expired")
    results_cut_first_n: int = _knob(
        0,
        "cut the next N results downloads: full Content-Length, about half the body, then "
        "the connection closes",
    )
    results_cut_rate: float = _knob(0.0, "cut this fraction of results downloads")
    results_stall_first_n: int = _knob(
        0,
        "stall the next N results downloads: half the body, then nothing for hang_s "
        "seconds, then the connection closes",
    )
    results_stall_rate: float = _knob(0.0, "stall this fraction of results downloads")
    latency_s: float = _knob(0.0, "added latency, in seconds, before every API answer")
    hang_first_n: int = _knob(
        0, "hold the next N API calls for hang_s seconds (longer than a client timeout)"
    )
    hang_s: float = _knob(
        300.0, "how long a hung API call, or a stalled results download, is held, in seconds"
    )
    fail_ids: set[str] = field(
        default_factory=set,
        metadata={"help": "a request whose object holds a record with this id fails processing"},
    )
    # How many failures each *_first_n knob has injected since it was last assigned.
    _used: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "_used":
            _check(name, value)  # also validates the constructor's arguments
        object.__setattr__(self, name, value)
        used = self.__dict__.get("_used")
        if used is not None and name.endswith("_first_n"):
            # Re-arm: assigning N means "the next N calls", not "the first N ever".
            used.pop(name.removesuffix("_first_n"), None)

    def as_dict(self) -> dict[str, Any]:
        """The knobs as plain JSON-ready values (``fail_ids`` sorted)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.init:
                value = getattr(self, f.name)
                out[f.name] = sorted(value) if isinstance(value, set) else value
        return out

    def update(self, **changes: Any) -> None:
        """Set several knobs at once; unknown names raise ``TypeError``."""
        names = {f.name for f in fields(self) if f.init}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown fault knob(s): {', '.join(unknown)}")
        for name, value in changes.items():
            setattr(self, name, set(value) if name == "fail_ids" else value)


def _check(name: str, value: Any) -> None:
    if name.endswith("_rate"):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Faults.{name} must be within [0, 1], got {value!r}")
    elif name.endswith("_first_n"):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"Faults.{name} must be an int >= 0, got {value!r}")
    elif name.endswith("_s"):
        if value < 0:
            raise ValueError(f"Faults.{name} must be >= 0, got {value!r}")
    elif name.endswith("_status") and not 500 <= value <= 599:
        raise ValueError(f"Faults.{name} must be a 5xx status, got {value!r}")
    elif name.endswith("_shape"):
        shapes = STATUS_MALFORMED_SHAPES if name.startswith("status") else IMPORT_MALFORMED_SHAPES
        if value != CYCLE and value not in shapes:
            raise ValueError(
                f"Faults.{name} must be {CYCLE!r} or one of {', '.join(shapes)}, got {value!r}"
            )


class FaultInjector:
    """Seeded decisions over a (mutable, shared) :class:`Faults`."""

    def __init__(self, faults: Faults, seed: int) -> None:
        self.faults = faults
        self._seed = seed
        self._rngs: dict[str, random.Random] = {}
        self._turns: dict[str, int] = {}

    def fire(self, kind: str) -> bool:
        """Decide whether the current call of ``kind`` gets the fault."""
        rng = self._rngs.get(kind)
        if rng is None:
            # A string seed is hashed with SHA-512, so it is stable across runs and
            # interpreters (unlike hash()).
            rng = self._rngs[kind] = random.Random(f"{self._seed}:{kind}")
        # Draw on every call, so the k-th call's decision depends only on k, even when a
        # rate is switched on mid-run.
        draw = rng.random()
        faults = self.faults
        used = faults._used.get(kind, 0)
        if used < getattr(faults, f"{kind}_first_n"):
            faults._used[kind] = used + 1
            return True
        rate: float = getattr(faults, f"{kind}_rate", 0.0)
        return draw < rate

    def shape(self, kind: str, shapes: tuple[str, ...]) -> str:
        """The shape of the current malformed answer of ``kind``: the ``<kind>_shape``
        knob's, or with ``"cycle"`` the next of ``shapes`` in turn (so the k-th malformed
        answer of a kind always takes the same shape)."""
        chosen: str = getattr(self.faults, f"{kind}_shape")
        turn = self._turns.get(kind, 0)
        self._turns[kind] = turn + 1
        return shapes[turn % len(shapes)] if chosen == CYCLE else chosen
