"""Building the configuration tree once, from layers of settings: a YAML file, ``--set`` values, flags.

Each `Layer` is a nested mapping; later layers override earlier ones key by key inside the
sections (``source``, ``pipeline``, ...) and replace any other value (a list, a mapping such as
``tracker.options`` or ``mqtt``). The merged data is validated once (`tree.Config`); the first
error is one line naming the key's path, said the way its layer was given: ``FILE: key: ...``
for the config file, ``key: ...`` for ``--set``, ``--flag (key): ...`` for a flag. The
``model`` section is a `ModelSpec`, overridden layer by layer (a layer from a file has its model
files relative to that file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from pydantic import ValidationError
from trackpipe.models.errors import ModelError
from trackpipe.models.spec import ModelSpec
from trackpipe.pipeline.errors import ConfigError, error_loc, first_error, validation_line

from .tree import Config, Section
from .yamlsafe import load_yaml

SCHEMA_ID = "https://trackpipe.invalid/schema/config.json"


@dataclass(frozen=True)
class Layer:
    """One source of settings. ``label``: how its errors are introduced: a config file's path,
    a flag (``--duration``) or "" (``--set``, code); ``key``: the dotted key a flag sets;
    ``base_dir``: model files are relative to this folder (the config file's)."""

    data: Any
    label: str = ""
    key: str = ""
    base_dir: Optional[Path] = None

    def say(self, line: str) -> str:
        """``line`` (an error naming a key) as the user gave it: prefixed with the file, or
        with the flag that set the key."""
        if self.key and (line == self.key or line.startswith((f"{self.key}:", f"{self.key}."))):
            return f"{self.label} ({self.key}){line[len(self.key):]}"
        if self.label and not self.key:
            return f"{self.label}: {line}"
        return line

    @staticmethod
    def of_key(dotted: str, value: Any, label: str = "") -> "Layer":
        """The layer that sets one dotted key (``pipeline.ring_slots``) to ``value``."""
        data: Any = value
        for part in reversed(dotted.split(".")):
            data = {part: data}
        return Layer(data, label, dotted if label else "")


def read_file(path: str) -> Layer:
    """A config file as a layer; ConfigError for a missing file or invalid YAML (with its line)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', None) or e}") from None
    return Layer({} if data is None else data, str(path), base_dir=p.resolve().parent)


def _sections(cls) -> Dict[str, type]:
    """Fields of model ``cls`` that are sections (merged key by key)."""
    return {k: f.annotation for k, f in cls.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, Section)}


def _merge(raw: dict, data: dict, cls, path: Tuple, layer: Layer, origins: Dict[Tuple, Layer]) -> None:
    sections = _sections(cls)
    for k, v in data.items():
        here = (*path, k)
        if k in sections and isinstance(v, dict) and isinstance(raw.get(k), dict):
            _merge(raw[k], v, sections[k], here, layer, origins)
            continue
        raw[k] = dict(v) if k in sections and isinstance(v, dict) else v
        for o in [o for o in origins if o[:len(here)] == here]:
            del origins[o]
        origins[here] = layer


def build_config(layers: Sequence[Layer]) -> Config:
    """The validated `Config` of ``layers`` applied in order; ConfigError (one line) otherwise."""
    raw: dict = {}
    origins: Dict[Tuple, Layer] = {}
    spec = ModelSpec()
    for layer in layers:
        data = layer.data
        if not isinstance(data, dict):
            raise ConfigError(layer.say(f"expected a mapping, got {data!r}") if layer.label
                              else f"config: expected a mapping, got {data!r}")
        if "model" in data:
            try:
                spec = data["model"] if isinstance(data["model"], ModelSpec) else \
                    spec.override(data["model"], base_dir=layer.base_dir, where="model")
            except ModelError as e:
                raise ConfigError(layer.say(str(e))) from None
            data = {k: v for k, v in data.items() if k != "model"}
        _merge(raw, data, Config, (), layer, origins)
    raw["model"] = spec
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        loc = error_loc(first_error(e))
        line = validation_line(e, Config)
        for n in range(len(loc), 0, -1):
            if loc[:n] in origins:
                line = origins[loc[:n]].say(line)
                break
        raise ConfigError(line) from None


def load_config(path: Optional[str] = None, data: Optional[dict] = None) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``data`` (if any)."""
    layers: List[Layer] = [read_file(path)] if path is not None else []
    if data:
        layers.append(Layer(data))
    return build_config(layers)


def config_data(cfg: Config, redact: bool = False) -> dict:
    """The config as plain data (YAML/JSON-safe; the model section as ``ModelSpec.to_mapping()``);
    ``redact``: passwords, tokens and credentials in URLs replaced by ``***``."""
    return cfg.model_dump(mode="json", context={"redact": redact})


def set_value(cfg: Config, dotted: str, value: Any) -> None:
    """Override one value of ``cfg`` in place by dotted key (``pipeline.ring_slots``), validated
    with the whole tree as if it came from ``--set``; on error ``cfg`` is left as it was."""
    data = {**cfg.model_dump(mode="python"), "model": cfg.model}
    new = build_config([Layer(data), Layer.of_key(dotted, value)])
    for name in Config.model_fields:
        setattr(cfg, name, getattr(new, name))


def to_dict(cfg: Config) -> dict:
    """The config as plain data (`config_data`)."""
    return config_data(cfg)


def dump_yaml(cfg: Config) -> str:
    """The effective configuration as YAML (secrets redacted): ``run_tracker.py --print-config``."""
    return yaml.safe_dump(config_data(cfg, redact=True), sort_keys=False, allow_unicode=True)


def json_schema() -> dict:
    """The JSON schema of a config file, for editors (``configs/schema.json``)."""
    schema = Config.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "trackpipe configuration", **{k: v for k, v in schema.items() if k != "title"}}


def schema_text() -> str:
    """`json_schema` as the text of ``configs/schema.json``."""
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"
