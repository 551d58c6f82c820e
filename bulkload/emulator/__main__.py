"""``python -m bulkload.emulator``: serve the emulator; see ``--help``."""

import sys

from ._cli import main

sys.exit(main())
