"""``python -m agent``: run one pilot's agent (see :mod:`agent.main`)."""

from __future__ import annotations

import sys

from agent.main import main

if __name__ == "__main__":
    sys.exit(main())
