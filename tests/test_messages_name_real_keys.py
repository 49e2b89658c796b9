"""Advice names what exists: every flag and config key that an error or log message (or a --help
text) names is one of the command lines' flags or a key of the config model; usage lines name
the command the user typed; ``run_tracker.py --help`` shows cameras, zones and lines with an
example each.

The messages are collected from the source (pipeline/, models/, trackers/, the two scripts): the
string parts of every ``raise ...(...)`` and of every ``log.error/warning/info/...``,
``parser.error`` and ``sys.exit`` call. In them, ``--flag`` words and dotted lowercase words
(``output.http_token``, ``outbox.dir``) are checked; file names (``meta.json``) are not keys.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator, NamedTuple, Set

import pytest
from conftest import ROOT

SOURCES = ["pipeline", "models", "trackers", "run_tracker.py", "run_capture.py"]
MESSAGE_CALLS = {"error", "warning", "critical", "info", "exception", "exit", "debug"}
FLAG = re.compile(r"(?<![\w/-])--[a-z][a-z0-9-]*")
KEY = re.compile(r"(?<![\w./$-])([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)(?![\w(/-])")
FILE_SUFFIXES = {"json", "yaml", "yml", "onnx", "txt", "mp4", "jpg", "png", "py", "db", "sqlite", "cfg", "weights",
                 "names", "engine", "xml", "bin", "jsonl", "csv"}
NOT_KEYS = {"e.g", "i.e"}
# flags of other programs that messages may name, each with its program
OTHER_PROGRAMS_FLAGS = {"--enable-shared": "CPython's ./configure (models/serve.py: libpython)"}


class Mention(NamedTuple):
    word: str
    where: str       # file:line of the message


def _strings(node: ast.AST) -> Iterator[str]:
    for n in ast.walk(node):
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            yield n.value


def message_mentions(path: Path, text: str | None = None) -> tuple[list[Mention], list[Mention]]:
    """(flags, keys) named by the messages of one Python file."""
    tree = ast.parse(path.read_text() if text is None else text)
    flags, keys = [], []
    for n in ast.walk(tree):
        if isinstance(n, ast.Raise) and n.exc is not None:
            strings = _strings(n.exc)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in MESSAGE_CALLS:
            strings = _strings(n)
        else:
            continue
        where = f"{path.relative_to(ROOT) if path.is_absolute() else path}:{n.lineno}"
        for s in strings:
            flags += [Mention(m.group(), where) for m in FLAG.finditer(s)]
            keys += [Mention(m.group(1), where) for m in KEY.finditer(s)
                     if m.group(1).rsplit(".", 1)[1] not in FILE_SUFFIXES and m.group(1) not in NOT_KEYS]
    return flags, keys


def source_files() -> list[Path]:
    out = []
    for name in SOURCES:
        p = ROOT / name
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return out


def _parsers() -> list[argparse.ArgumentParser]:
    from trackpipe.models.__main__ import build_parser as models_parser
    from trackpipe.pipeline import capture_cli
    from trackpipe.pipeline.cli import build_parser as tracker_parser
    from trackpipe.pipeline.recording.export import build_parser as export_parser
    from trackpipe.trackers.__main__ import build_parser as trackers_parser
    out, todo = [], [tracker_parser(), capture_cli.build_parser(), export_parser(), models_parser(), trackers_parser()]
    while todo:
        p = todo.pop()
        out.append(p)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo += list(a.choices.values())
    return out


def real_flags() -> Set[str]:
    """Every option string of the project's command lines."""
    return {s for p in _parsers() for a in p._actions for s in a.option_strings if s.startswith("--")}


def key_paths() -> Set[str]:
    """Every dotted key path of the config model (list items and mappings see through)."""
    from trackpipe.pipeline.config.load import json_schema

    schema = json_schema()
    defs = schema.get("$defs", {})
    out: Set[str] = set()

    def walk(node: dict, path: tuple, seen: frozenset) -> None:
        ref = node.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                walk(defs[name], path, seen | {name})
            return
        for alt in (*node.get("anyOf", ()), *node.get("oneOf", ()), *node.get("allOf", ())):
            walk(alt, path, seen)
        if isinstance(node.get("items"), dict):
            walk(node["items"], path, seen)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path, seen)
        for k, sub in node.get("properties", {}).items():
            out.add(".".join((*path, k)))
            walk(sub, (*path, k), seen)

    walk(schema, (), frozenset())
    return out


def is_key(word: str, paths: Set[str]) -> bool:
    """``word`` is a key path from the top (``output.http_token``) or the end of one
    (``outbox.dir``, said of any target's outbox)."""
    return word in paths or any(p.endswith("." + word) for p in paths)


# --- the checks --------------------------------------------------------------------------------

def test_messages_name_real_flags():
    flags = real_flags()
    bad = [f"{m.where}: {m.word}" for f in source_files() for m in message_mentions(f)[0]
           if m.word not in flags and m.word not in OTHER_PROGRAMS_FLAGS]
    assert not bad, "messages name flags that no command line has:\n" + "\n".join(bad)


def test_messages_name_real_keys():
    paths = key_paths()
    bad = [f"{m.where}: {m.word}" for f in source_files() for m in message_mentions(f)[1] if not is_key(m.word, paths)]
    assert not bad, "messages name config keys that the config model does not have:\n" + "\n".join(bad)


def test_help_texts_name_real_flags_and_keys():
    """--help's descriptions, option helps and epilogs: the same rule as the messages."""
    flags, paths = real_flags(), key_paths()
    bad = []
    for p in _parsers():
        for text in [p.description, p.epilog, *(a.help for a in p._actions)]:
            if not isinstance(text, str):
                continue
            bad += [f"{p.prog}: {f}" for f in FLAG.findall(text) if f not in flags]
            bad += [f"{p.prog}: {k}" for k in KEY.findall(text)
                    if k.rsplit(".", 1)[1] not in FILE_SUFFIXES and k not in NOT_KEYS and not is_key(k, paths)]
    assert not bad, "help texts name flags or keys that do not exist:\n" + "\n".join(bad)


def test_the_checks_find_what_they_look_for():
    """A message advising ``http.token`` or ``--http-tokn`` is caught; real ones pass."""
    src = ('def f(h):\n'
           '    raise ValueError(f"--http-host {h} exposes the live view: set http.token or --http-tokn")\n'
           'def g(log):\n'
           '    log.warning("see output.http_token, outbox.dir and meta.json, e.g. --http-token")\n')
    flags, keys = message_mentions(Path("x.py"), src)
    assert [m.word for m in flags] == ["--http-host", "--http-tokn", "--http-token"]
    assert [m.word for m in keys] == ["http.token", "output.http_token", "outbox.dir"]
    assert flags[0].where == "x.py:2"
    real, paths = real_flags(), key_paths()
    assert [m.word in real for m in flags] == [True, False, True]
    assert [is_key(m.word, paths) for m in keys] == [False, True, True]


def test_exposed_host_without_a_token_names_the_flag_and_key_that_work(monkeypatch):
    from trackpipe.pipeline.web import WebConfig, WebConfigError

    monkeypatch.delenv("TRACKPIPE_HTTP_TOKEN", raising=False)
    with pytest.raises(WebConfigError) as e:
        WebConfig(host="0.0.0.0").resolved()
    msg = str(e.value)
    assert "--http-token" in msg and "output.http_token" in msg and "http.token" not in msg.replace("output.", "")
    assert "--http-token" in real_flags() and "output.http_token" in key_paths()


# --- usage lines and --help ----------------------------------------------------------------------

def _usage(args: list[str], cwd: Path = ROOT) -> str:
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()[0]


@pytest.mark.parametrize("typed, args", [
    ("python -m trackpipe.models", [sys.executable, "-m", "trackpipe.models", "--help"]),
    ("python -m models", [sys.executable, "-m", "models", "--help"]),
    ("python -m trackpipe.trackers", [sys.executable, "-m", "trackpipe.trackers", "--help"]),
    ("python -m trackers evaluate", [sys.executable, "-m", "trackers", "evaluate", "--help"]),
    ("run_tracker.py", [sys.executable, "run_tracker.py", "--help"]),
    ("python -m trackpipe.pipeline", [sys.executable, "-m", "trackpipe.pipeline", "--help"]),
])
def test_usage_names_the_command_typed(typed, args):
    assert _usage(args).startswith(f"usage: {typed} ")


def test_usage_of_the_console_script():
    script = Path(sys.executable).with_name("trackpipe")
    if not script.exists():
        pytest.skip(f"no trackpipe console script beside {sys.executable} (pip install -e .)")
    assert _usage([str(script), "--help"], cwd=Path("/")).startswith("usage: trackpipe ")


def test_help_shows_cameras_zones_and_lines_with_examples_that_load():
    from trackpipe.pipeline.cli import build_parser
    from trackpipe.pipeline.config import load_config
    from trackpipe.pipeline.config.yamlsafe import load_yaml

    text = build_parser().format_help()
    examples = {}
    for line in text.splitlines():
        m = re.match(r"^\s+(cameras|zones|lines): (\[.*\])$", line)
        if m:
            examples[m.group(1)] = load_yaml(line.strip())
    assert set(examples) == {"cameras", "zones", "lines"}, text
    for key, data in examples.items():
        load_config(data=data)                 # raises ConfigError if an example is wrong
    set_example = re.search(r"--set '([a-z]+)=(.*)'$", text, re.M)
    assert set_example, text
    load_config(data={set_example.group(1): load_yaml(set_example.group(2))})
