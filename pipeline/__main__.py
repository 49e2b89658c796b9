"""``python -m trackpipe.pipeline``: the command line of run_tracker.py (and of ``trackpipe``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
