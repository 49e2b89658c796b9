"""Class names: the names file reader, the packaged COCO names, and class ids-or-names parsing.

One place for both command lines and the config: ``--classes person,car``, ``--classes 0,2``
and ``classes: [person, 2]`` all go through :func:`parse_classes`.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from .errors import ModelConfigError, ModelError, check_file

ClassesInput = Union[str, int, Sequence[Union[int, str]], None]


def coco_names_path() -> Path:
    """The 80 COCO class names shipped inside the package (darknet's data/coco.names)."""
    return Path(str(resources.files("trackpipe.models.data") / "coco.names"))


def read_names(path, num_classes: Optional[int] = None) -> List[str]:
    """Class names, one per line (blank lines skipped).

    path None: numbered names ``["0", "1", ...]`` (needs num_classes). With num_classes, a
    file with fewer names than the model's classes is an error naming both counts.
    """
    if path is None:
        if num_classes is None:
            raise ValueError("read_names(None) needs num_classes")
        return [str(i) for i in range(num_classes)]
    p = check_file(path, "names file")
    try:
        names = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read names file {p}: {e}")
    if num_classes is not None and len(names) < num_classes:
        raise ModelError(f"{p}: {len(names)} names but the cfg has {num_classes} classes")
    return names


def split_classes(value: ClassesInput) -> Optional[Tuple[Union[int, str], ...]]:
    """``"person, 2"``, ``["person", 2]``, ``2`` -> ``("person", 2)``; None stays None.

    Digits become ids, everything else stays a name; no names file needed yet.
    """
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else list(value)
    out: List[Union[int, str]] = []
    for c in items:
        if isinstance(c, bool) or not isinstance(c, (int, str)):
            raise ModelConfigError(f"classes: expected class ids or names, got {c!r}")
        if isinstance(c, str):
            c = c.strip()
            if not c:
                continue
            if c.isdigit():
                c = int(c)
        if isinstance(c, int) and c < 0:
            raise ModelConfigError(f"classes: class id {c} is negative")
        out.append(c)
    if not out:
        raise ModelConfigError("classes: empty list (leave it out to keep every class)")
    return tuple(out)


def parse_classes(value: ClassesInput, names: Optional[Sequence[str]]) -> Optional[Tuple[int, ...]]:
    """Class ids and/or names -> tuple of ids in the order given, repeats dropped (None keeps every class).

    ``parse_classes("person,car", coco) == (0, 2)``; ``parse_classes("0,2", None) == (0, 2)``.
    Raises ModelConfigError naming an unknown class and the closest name, or an id beyond
    the names list.
    """
    items = split_classes(value)
    if items is None:
        return None
    ids: List[int] = []
    for c in items:
        if isinstance(c, int):
            if names is not None and c >= len(names):
                raise ModelConfigError(f"classes: class id {c} is out of range (0-{len(names) - 1})")
            ids.append(c)
            continue
        if names is None:
            raise ModelConfigError(f"classes: {c!r} is a name, but the model has no names file "
                                   f"(give class ids, or --names FILE)")
        if c in names:
            ids.append(list(names).index(c))
            continue
        lower = [n.lower() for n in names]
        if c.lower() in lower:
            ids.append(lower.index(c.lower()))
            continue
        close = difflib.get_close_matches(c.lower(), lower, n=1, cutoff=0.6)
        hint = f" (did you mean {names[lower.index(close[0])]!r}?)" if close else ""
        raise ModelConfigError(f"classes: unknown class {c!r}{hint}; known: {', '.join(names[:8])}"
                               f"{', ...' if len(names) > 8 else ''} ({len(names)} names) or ids "
                               f"0-{len(names) - 1}")
    return tuple(dict.fromkeys(ids))
