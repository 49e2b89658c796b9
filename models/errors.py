"""Errors with a message fit for one line on stderr, and the checks that raise them."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path
from types import ModuleType


class ModelError(Exception):
    """A user-facing problem with a model file, cfg, weights or backend."""


class ModelConfigError(ModelError, ValueError):
    """A bad model setting (unknown key, value out of range, unknown class); names the key and
    what is allowed. A ValueError too, so callers that catch ValueError keep working."""


class UnsupportedLayerError(ModelError):
    """A darknet cfg section this project cannot build."""


class WeightsError(ModelError):
    """A .weights file that does not match its cfg."""


class BackendUnavailable(ModelError):
    """A backend whose library, device or version is missing."""


class MissingExtra(BackendUnavailable, ModuleNotFoundError):
    """A library from a pip extra of this project (tf, eval, gui, tensorrt, ...) is not installed.
    Also a ModuleNotFoundError (``name``: the module), for handlers written for a plain import."""


# import name -> how users know the library
_LIBRARY = {"tensorflow": "TensorFlow", "tensorrt": "TensorRT", "PySide6": "PySide6 (Qt)",
            "pycocotools": "pycocotools", "motmetrics": "py-motmetrics", "openvino": "OpenVINO"}


def install_hint(extra: str) -> str:
    """The command that installs a pip extra of this project, as the README writes it."""
    return f'pip install -e ".[{extra}]"'


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise MissingExtra with one line naming the pip command, e.g.
    ``require("tensorflow", "tf", "the tf backend")`` ->
    'the tf backend needs TensorFlow, which is not installed: pip install -e ".[tf]"'.

    Only a missing ``module`` itself is reported so; an installed library that fails to
    import (a broken dependency of it) raises its own error.
    """
    try:
        if module.split(".")[0] == "tensorflow" and module not in sys.modules:
            with native_stderr_quiet():
                return importlib.import_module(module)
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise
        lib = _LIBRARY.get(module.split(".")[0], module)
        raise MissingExtra(f"{what} needs {lib}, which is not installed: {install_hint(extra)}",
                           name=module.split(".")[0]) from None


@contextlib.contextmanager
def native_stderr_quiet():
    """File descriptor 2 to /dev/null meanwhile (unless logging is at DEBUG): for native
    libraries that write to it themselves before any setting can reach them (TensorFlow's absl
    "All log messages before absl::InitializeLog()", oneDNN and CUDA-stub lines on import)."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quiet_loggers(*names: str):
    """The loggers ``names`` show warnings and errors only, meanwhile (a step whose own warning
    line already says what happens: its INFO details are no news)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def error_line(e: BaseException, typed: bool = True) -> str:
    """``e`` as one line: the first line of its message, after its type name when ``typed``
    (``RuntimeError: boom``); its type name alone when the message is empty."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    if not first:
        return type(e).__name__
    return f"{type(e).__name__}: {first}" if typed else first


def check_file(path, what: str) -> Path:
    """``path`` as a Path when it is a readable regular file, else ModelError with one line:
    '<what> not found: P', '<what> P is a directory, not a file'."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ModelError(f"{what} {p} is a directory, not a file")
    if not p.is_file():
        raise ModelError(f"{what} not found: {p}")
    return p


def check_dir(path, what: str) -> Path:
    """``path`` as a Path when it is a directory, else ModelError with one line."""
    p = Path(path).expanduser()
    if p.is_file():
        raise ModelError(f"{what} {p} is a file, not a directory")
    if not p.is_dir():
        raise ModelError(f"{what} not found: {p}")
    return p
