"""Every option of every command line has a help text (``--help`` is complete)."""

from __future__ import annotations

import argparse

import pytest


def _parsers():
    from trackpipe.models.__main__ import build_parser as models_parser
    from trackpipe.pipeline import capture_cli
    from trackpipe.pipeline.cli import build_parser as tracker_parser
    from trackpipe.trackers.__main__ import build_parser as trackers_parser
    out = {"run_tracker.py": tracker_parser(), "run_capture.py": capture_cli.build_parser()}
    for name, p in (("python -m models", models_parser()), ("python -m trackers", trackers_parser())):
        out[name] = p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, sp in action.choices.items():
                    out[f"{name} {sub}"] = sp
    return out


@pytest.mark.parametrize("name, parser", list(_parsers().items()))
def test_every_option_has_help(name, parser):
    missing = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
               and (a.help is None or not str(a.help).strip()) and a.help != argparse.SUPPRESS]
    assert not missing, f"{name}: no help for {missing}"
    assert "``" not in parser.format_help(), f"{name}: raw markup in --help"
