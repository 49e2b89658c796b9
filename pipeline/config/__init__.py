"""Typed pipeline configuration: one validated tree (pydantic), built once in the parent from a
YAML file, ``--set key=value`` and the command line's flags.

    cfg = load_config("configs/default.yaml")          # or build_config([read_file(p), Layer(...)])
    cfg.pipeline.ring_slots, cfg.cameras[0].zones[0].points

Unknown keys and out-of-range values are rejected with one line that names the key's path and
what is allowed, e.g. ``cameras[1].zones[0]: unknown key 'pionts' (allowed: name, points, ...)``
(`tree` holds every section, default and check; `load` the layers and the schema; `yamlsafe`
the bounded YAML reader). The model section is a ``trackpipe.models.spec.ModelSpec`` (the one
model type, validated against the backend and precision registries); model files named in a
config file are relative to that file; every other path is relative to the working directory.
"""

from .load import (
                   Layer,
                   build_config,
                   config_data,
                   dump_yaml,
                   json_schema,
                   load_config,
                   read_file,
                   schema_text,
                   set_value,
                   to_dict,
)
from .tree import (
                   CAMERA_NAME,
                   CAMERA_NAME_RULE,
                   CameraConfig,
                   Config,
                   OutputConfig,
                   PipelineConfig,
                   ProfileConfig,
                   SourceConfig,
                   TrackerConfig,
                   camera_name_problem,
)
from .yamlsafe import YAML_MAX_DEPTH, YAML_MAX_VALUES, BoundedLoader, load_yaml, parse_scalar

__all__ = [
                   "CAMERA_NAME",
                   "CAMERA_NAME_RULE",
                   "YAML_MAX_DEPTH",
                   "YAML_MAX_VALUES",
                   "BoundedLoader",
                   "CameraConfig",
                   "Config",
                   "Layer",
                   "OutputConfig",
                   "PipelineConfig",
                   "ProfileConfig",
                   "SourceConfig",
                   "TrackerConfig",
                   "build_config",
                   "camera_name_problem",
                   "config_data",
                   "dump_yaml",
                   "json_schema",
                   "load_config",
                   "load_yaml",
                   "parse_scalar",
                   "read_file",
                   "schema_text",
                   "set_value",
                   "to_dict",
]
