#!/usr/bin/env python
"""Grab the screen, detect and track objects, draw the boxes on a click-through overlay.

    python run_capture.py --region 0,0,1280,720 --profile profile.json
    python run_capture.py --help

Thin wrapper: the command line lives in pipeline/capture_cli.py.
"""

import sys

if __name__ == "__main__":
    from pipeline.capture_cli import main

    sys.exit(main())
