"""Local emulator of the SafetyKit Data API and of S3 pre-signed PUTs, for tests.

Shares no code with the rest of ``bulkload`` on purpose: tests that run bulkload against
it must not be able to agree with themselves.

    async with Emulator(api_key="test-key") as emu:
        ...  # point the client at emu.base_url
        await emu.wait_for(lambda: all(r.put_successes for r in emu.requests()))
"""

from ._cli import main as main
from ._faults import Faults as Faults
from ._records import PutAttempt as PutAttempt
from ._records import RequestInfo as RequestInfo
from ._server import Emulator as Emulator
from ._thread import EmulatorThread as EmulatorThread

__all__ = ["Emulator", "EmulatorThread", "Faults", "PutAttempt", "RequestInfo", "main"]
