"""``python -m pilotdata.cli``: the same as the ``pdata`` command."""

from __future__ import annotations

import sys

from pilotdata.cli import main

if __name__ == "__main__":
    sys.exit(main())
