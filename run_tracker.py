#!/usr/bin/env python
"""Detect and track objects in a video, image folder, camera, stream or screen.

    python run_tracker.py --source video.mp4 --output out.mp4 --mot tracks.txt --profile profile.json
    python run_tracker.py --help

Thin wrapper: the command line lives in pipeline/cli.py (also the ``trackpipe`` console script).
"""

import signal
import sys

if __name__ == "__main__":
    # Ctrl-C / SIGTERM during the imports below: exit 130 / 143, no traceback
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, lambda signum, frame: sys.exit(128 + signum))
    from trackpipe.pipeline.cli import main

    sys.exit(main())
