#!/usr/bin/env python
"""Grab the screen, detect and track objects, draw the boxes on a click-through overlay.

    python run_capture.py --region 0,0,1280,720 --profile profile.json
    python run_capture.py --help

Thin wrapper: the command line lives in pipeline/capture_cli.py.
"""

import signal
import sys

if __name__ == "__main__":
    # Ctrl-C / SIGTERM during the imports below: exit 130 / 143, no traceback
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, lambda signum, frame: sys.exit(128 + signum))
    from trackpipe.pipeline.capture_cli import main

    sys.exit(main())
