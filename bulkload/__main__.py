"""``python -m bulkload`` runs the same CLI as the ``bulkload`` command."""

import sys

from .cli import main

sys.exit(main())
