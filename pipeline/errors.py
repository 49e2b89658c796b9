"""Errors whose message is fit for one ``error: ...`` line on stderr."""


class PipelineError(Exception):
    """A user-facing problem running the pipeline (exit code 1)."""

    exit_code = 1


class ConfigError(PipelineError):
    """An invalid configuration file, key or value (exit code 2)."""

    exit_code = 2


class SourceError(PipelineError):
    """A source that does not exist, cannot be opened or cannot be decoded (exit code 2)."""

    exit_code = 2


class StageFailed(PipelineError):
    """A stage process died or stopped heart-beating and could not be restarted (exit code 1)."""


# --- typed-config validation errors as one line -------------------------------------------------
# The configuration tree (pipeline.config) and the event settings (pipeline.events.config) are
# pydantic models; these turn the first error of a pydantic ValidationError into the one line a
# user sees, naming the key's full path (``cameras[1].zones[0].points``) and what is allowed.

def field_error(message: str, sub: str = ""):
    """An error to raise from a pydantic validator: ``message`` is kept as is, at the key being
    validated, or at ``sub`` below it (e.g. ``zones[0].camera`` from a model validator)."""
    from pydantic_core import PydanticCustomError
    return PydanticCustomError("trackpipe", "{message}", {"message": message, "sub": sub})


def whole_error(message: str):
    """An error to raise from a pydantic validator whose ``message`` already names its key."""
    from pydantic_core import PydanticCustomError
    return PydanticCustomError("trackpipe_whole", "{message}", {"message": message})


def key_path(*parts) -> str:
    """A pydantic ``loc`` as a key path: ``('cameras', 1, 'zones', 0)`` -> ``cameras[1].zones[0]``;
    str parts may be paths already (joined with a dot), empty parts are skipped."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p:
            out += f"{'.' if out and not str(p).startswith('[') else ''}{p}"
    return out


def allowed_keys(root, loc) -> list:
    """The keys of the pydantic model reached from model class ``root`` along ``loc``."""
    import typing

    from pydantic import BaseModel

    def unwrap(tp, part=None):
        while True:
            origin, args = typing.get_origin(tp), typing.get_args(tp)
            if origin is typing.Annotated:
                tp = args[0]
            elif origin is typing.Union:
                models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
                rest = [a for a in args if a is not type(None)]
                tp = models[0] if models else rest[0] if len(rest) == 1 else None
            elif origin in (list, tuple) and isinstance(part, int):
                return args[0] if args else None
            elif origin is dict and isinstance(part, str):
                return args[1] if len(args) > 1 else None
            else:
                return tp
    tp = root
    for part in loc:
        tp = unwrap(tp, part)
        if isinstance(part, str) and isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(part)
            tp = f.annotation if f is not None else None
    tp = unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _got(value, bound=None) -> str:
    if isinstance(bound, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)   # a float setting given as an integer: shown as the float it is
    return repr(value)


_EXPECTED = {"bool_type": "true or false", "bool_parsing": "true or false", "int_type": "an integer",
             "int_parsing": "an integer", "int_from_float": "an integer", "float_type": "a number",
             "float_parsing": "a number", "finite_number": "a finite number", "string_type": "a string",
             "list_type": "a list", "tuple_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
             "model_attributes_type": "a mapping", "dataclass_type": "a mapping"}


def first_error(error) -> dict:
    """The error of a pydantic ``ValidationError`` to report: an unknown key first (a misspelt
    key also leaves the key it meant missing), else the first."""
    errors = error.errors(include_url=False)
    return next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])


def error_loc(e: dict) -> tuple:
    """The full key path of one pydantic error (its ``loc``, plus the ``sub`` path of a
    `field_error`) as a tuple: ``('cameras', 0, 'zones', 1, 'points')``."""
    import re
    sub = (e.get("ctx") or {}).get("sub", "") if e["type"] == "trackpipe" else ""
    tail = tuple(int(i) if i else k for k, i in re.findall(r"([^.\[\]]+)|\[(\d+)\]", sub))
    return (*e["loc"], *tail)


def validation_line(error, root=None, where: str = "") -> str:
    """The first error of a pydantic ``ValidationError`` as one line: ``<path>: <problem>``, e.g.
    ``cameras[1].zones[0]: unknown key 'pionts' (allowed: name, points, ...)``. ``root``: the
    validated model class (the allowed keys of an unknown one); ``where``: the path of the
    validated value (e.g. ``webhooks[0]``)."""
    e = first_error(error)
    loc, kind, ctx, got = tuple(e["loc"]), e["type"], e.get("ctx") or {}, e.get("input")
    path = key_path(where, *loc)
    if kind == "trackpipe_whole":
        return ctx["message"]
    if kind == "trackpipe":
        full = key_path(path, ctx.get("sub", ""))
        return f"{full}: {ctx['message']}" if full else ctx["message"]
    if kind == "extra_forbidden":
        allowed = allowed_keys(root, loc[:-1]) if root is not None else []
        parent = key_path(where, *loc[:-1])
        return (f"{parent}: " if parent else "") + f"unknown key '{loc[-1]}'" + (
            f" (allowed: {', '.join(allowed)})" if allowed else "")
    if kind == "missing":
        parent = key_path(where, *loc[:-1])
        return (f"{parent}: " if parent else "") + f"missing key '{loc[-1]}'"
    if kind in _EXPECTED:
        problem = f"expected {_EXPECTED[kind]}, got {_got(got)}"
    elif kind in ("literal_error", "enum"):
        allowed = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        problem = f"invalid value {got!r} (allowed: {allowed})"
    elif kind == "greater_than_equal":
        problem = f"{_got(got, ctx['ge'])} is below the minimum {ctx['ge']}"
    elif kind == "less_than_equal":
        problem = f"{_got(got, ctx['le'])} is above the maximum {ctx['le']}"
    elif kind == "greater_than":
        problem = f"{_got(got, ctx['gt'])} must be greater than {ctx['gt']}"
    elif kind == "less_than":
        problem = f"{_got(got, ctx['lt'])} must be less than {ctx['lt']}"
    elif kind == "too_short":
        problem = f"expected at least {ctx.get('min_length')} items, got {got!r}"
    elif kind == "too_long":
        problem = f"expected at most {ctx.get('max_length')} items, got {got!r}"
    elif kind == "value_error":
        problem = str(ctx.get("error", e["msg"]))
    else:
        problem = e["msg"]
    return f"{path}: {problem}" if path else problem
