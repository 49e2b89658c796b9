"""``python -m trackpipe.pipeline``: the command line of run_tracker.py (and of ``trackpipe``);
``python -m trackpipe.pipeline export ...``: a recorded range as an MP4 (docs/recording.md)."""

import sys


def _main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "export":
        from .recording.export import main as export
        return export(sys.argv[2:])
    from .cli import main
    return main()


if __name__ == "__main__":
    sys.exit(_main())
