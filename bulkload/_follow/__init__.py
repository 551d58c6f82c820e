"""⑥ ``status`` and ``wait``: every request followed to its end, after the upload.

::

    follower.py   Follower: status, wait (per-request backoff under a global cap), watch
    results.py    results joined to source lines; the server's line numbers located
"""

from .follower import Follower, StatusChange, WaitResult

__all__ = ["Follower", "StatusChange", "WaitResult"]
