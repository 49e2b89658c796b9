#!/usr/bin/env python
"""Detect and track objects in a video, image folder, camera, stream or screen.

    python run_tracker.py --source video.mp4 --output out.mp4 --mot tracks.txt --profile profile.json
    python run_tracker.py --help

Thin wrapper: the command line lives in pipeline/cli.py (also the ``trackpipe`` console script).
"""

import sys

if __name__ == "__main__":
    from pipeline.cli import main

    sys.exit(main())
