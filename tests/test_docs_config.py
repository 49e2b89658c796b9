"""Every config example in README.md and docs/*.md loads with the real config model.

A fenced block whose info string starts with ``yaml`` (or ``yml``) is a trackpipe config and is
loaded with `pipeline.config.load_config` (YAML as the config file reader reads it, then the
model). A YAML block that is not a whole trackpipe config (another tool's file, a list of
alternatives) says so on its fence: ```` ```yaml not-a-config ````; nothing is skipped by
guessing. ``${VAR}`` values are set in the environment, as the user would. A block without a
language that reads as a mapping of config sections is an untagged config and fails too. A
failure names the file and the block's line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, NamedTuple

import pytest
import yaml
from conftest import ROOT

NOT_A_CONFIG = "not-a-config"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(\s*)(```+|~~~+)(.*)$")


class Block(NamedTuple):
    path: Path
    line: int          # 1-based line of the opening fence
    info: str          # the fence's info string ("yaml", "yaml not-a-config", "")
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def lang(self) -> str:
        return self.info.split()[0].lower() if self.info.split() else ""


def fenced_blocks(path: Path) -> List[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    out, open_, body = [], None, []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if open_ is None:
            if m:
                open_, body = (n, m.group(2), m.group(3).strip(), len(m.group(1))), []
        elif m and m.group(2).startswith(open_[1]) and not m.group(3).strip():
            indent = open_[3]
            out.append(Block(path, open_[0], open_[2], "\n".join(b[indent:] if b[:indent].isspace() else b
                                                                  for b in body)))
            open_ = None
        else:
            body.append(line)
    assert open_ is None, f"{path.relative_to(ROOT)}:{open_[0]}: a fenced block is never closed"
    return out


def all_blocks() -> List[Block]:
    return [b for p in DOCS for b in fenced_blocks(p)]


def config_blocks() -> List[Block]:
    return [b for b in all_blocks() if b.lang in ("yaml", "yml") and NOT_A_CONFIG not in b.info.split()[1:]]


def check_config(block: Block) -> None:
    """Load ``block`` as a config file; AssertionError naming the file and line otherwise."""
    from trackpipe.pipeline.config import load_config
    from trackpipe.pipeline.config.yamlsafe import load_yaml
    from trackpipe.pipeline.errors import ConfigError

    try:
        data = load_yaml(block.text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = block.line + 1 + mark.line if mark is not None else block.line
        raise AssertionError(f"{block.path.relative_to(ROOT)}:{line}: invalid YAML: {e}") from None
    assert isinstance(data, dict), f"{block.where}: a config is a mapping, got {type(data).__name__}"
    try:
        load_config(data=data)
    except ConfigError as e:
        raise AssertionError(f"{block.where}: {e}") from None


@pytest.mark.parametrize("block", config_blocks(), ids=lambda b: b.where)
def test_config_example_loads(block, monkeypatch):
    for name in re.findall(r"\$\{(\w+)\}", block.text):   # ${VAR}: what the user's environment holds
        monkeypatch.setenv(name, "set-by-the-user")
    check_config(block)


def test_there_are_config_examples():
    blocks = config_blocks()
    assert len(blocks) >= 4, [b.where for b in blocks]
    assert any(b.path.name == "events.md" for b in blocks)


def test_untagged_blocks_are_not_configs():
    """A block without a language that reads as a mapping of the config's sections is a config
    the loader test would miss: tag it ``yaml`` (or ``yaml not-a-config``)."""
    from trackpipe.pipeline.config.tree import Config

    sections = set(Config.model_fields)
    bad = []
    for b in all_blocks():
        if b.lang:
            continue
        try:
            data = yaml.safe_load(b.text)
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and set(map(str, data)) & sections:
            bad.append(b.where)
    assert not bad, f"untagged config blocks: {bad}"


# --- the checker itself ----------------------------------------------------------------------

def test_checker_names_file_and_line_of_a_wrong_key(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n\n```yaml\ncameras:\n  - name: road\n    source: rtsp://h/s\n```\n"
                  "```yaml not-a-config\nservices: {}\n```\n")
    blocks = fenced_blocks(md)
    assert [(b.line, b.lang, NOT_A_CONFIG in b.info) for b in blocks] == [(3, "yaml", False), (8, "yaml", True)]
    block = blocks[0]._replace(path=ROOT / "docs" / "x.md")
    with pytest.raises(AssertionError, match=r"^docs/x\.md:3: .*source"):
        check_config(block)
    good = block._replace(text="cameras:\n  - name: road\n    uri: rtsp://h/s\n")
    check_config(good)


def test_checker_names_the_line_of_bad_yaml(tmp_path):
    block = Block(ROOT / "docs" / "x.md", 10, "yaml", "output:\n  mot: [a\n")
    with pytest.raises(AssertionError, match=r"^docs/x\.md:1[23]: invalid YAML"):
        check_config(block)


# --- paths the docs name -------------------------------------------------------------------------

TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")} | {"..", ".ci"}
PLACEHOLDER = re.compile(r"[<>{}*?\[\]…]|\.\.\.|\bNAME\b|\bDIR\b|\bPATH\b|\bFILE\b|\bX\b")
SPAN = re.compile(r"`([^`\n]+)`|\]\(([^)\s#]+)(?:#[^)]*)?\)")


def named_paths(path: Path) -> List[tuple]:
    """(line, word) for every repository path a Markdown file names in its code spans and link
    targets: words whose first part is one of the repository's top-level entries
    (``configs/cpu-tiny.yaml``, ``pipeline/web/app.py:12``, ``../shared/assets/...``). A user's own
    files (``road.yaml``, ``out/x.mp4``) and other projects' (``NVIDIA/TensorRT/...``) start
    elsewhere."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        for m in SPAN.finditer(line):
            for w in (m.group(1) or m.group(2) or "").split():
                w = re.sub(r":\d+(-\d+)?$", "", w.strip("'\",;:()"))
                if "/" in w and "://" not in w and not w.startswith("-") and w.split("/")[0] in TOP:
                    out.append((n, w))
    return out


def missing(word: str, base: Path) -> bool:
    """True when ``word`` (a path relative to ``base``) names nothing: up to its first placeholder."""
    parts = []
    for part in word.split("/"):
        if PLACEHOLDER.search(part):
            break
        parts.append(part)
    if not parts:
        return False
    target = base.joinpath(*parts)
    return not target.exists()


def test_named_repository_paths_exist():
    bad = []
    for doc in DOCS:
        for n, w in named_paths(doc):
            if missing(w, ROOT) and missing(w, doc.parent):
                bad.append(f"{doc.relative_to(ROOT)}:{n}: {w}")
    assert not bad, "paths that do not exist:\n" + "\n".join(bad)


def test_path_check_sees_a_missing_file(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("see `configs/no-such.yaml` and [this](docs/events.md), `out/mine.mp4`, `road.yaml`\n"
                  "`pipeline/web/app.py:12` `DIR/<camera>/x.mp4` `configs/{name}.yaml`\n")
    words = [w for _, w in named_paths(md)]
    assert words == ["configs/no-such.yaml", "docs/events.md", "pipeline/web/app.py", "configs/{name}.yaml"]
    assert [missing(w, ROOT) for w in words] == [True, False, False, False]


def test_readme_names_the_console_script():
    text = (ROOT / "README.md").read_text()
    assert re.search(r"`trackpipe --", text), "README.md: the `trackpipe` command (pyproject's console script)"


# --- flags the docs name -------------------------------------------------------------------------

DOC_FLAG = re.compile(r"(?<![\w/-])--[a-z][a-z0-9-]*")
# other programs' flags that the docs name, each with its program
OTHER_PROGRAMS_FLAGS = {"--help": "every command", "--gpus": "docker run", "--rm": "docker run",
                        "--no-deps": "pip install", "--model-repository": "tritonserver",
                        "--dist": "pytest (pytest-xdist)"}


def repository_flags() -> set:
    """Every ``--flag`` any argparse parser of the repository adds (the commands, benchmarks and
    test servers), read from the source's ``add_argument`` calls."""
    import ast

    out = set()
    files = [*ROOT.glob("*.py"), *(p for d in ("pipeline", "models", "trackers", "benchmarks", "tests/rtsp")
                                   for p in (ROOT / d).rglob("*.py"))]
    for f in files:
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument":
                out |= {a.value for a in n.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                        and a.value.startswith("--")}
    return out


def test_docs_name_real_flags():
    flags = repository_flags() | set(OTHER_PROGRAMS_FLAGS)
    assert {"--source", "--http-token", "--mot-root"} <= flags
    bad = [f"{doc.relative_to(ROOT)}:{n}: {f}" for doc in DOCS
           for n, line in enumerate(doc.read_text().splitlines(), 1) for f in DOC_FLAG.findall(line)
           if f not in flags]
    assert not bad, "flags that no parser of the repository has:\n" + "\n".join(bad)
