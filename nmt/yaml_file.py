"""Reading YAML the way a config needs: a mapping from a UTF-8 file, where a key or a
section given twice is refused with its line (plain YAML lets the last one win
silently), and every other problem is one line naming the file and, where there is
one, the line. No torch in this module.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml


def read(path: Path, error: type[Exception]) -> Any:
    """`path`'s YAML document (None for an empty one); `error`: what to raise."""
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise error(f"config file {path} {what}")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise error(f"{path}: not valid UTF-8") from None
    except _DuplicateKey as dup:
        raise error(f"{path} line {dup.line}: {dup}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise error(f"{path}{where}: not valid YAML") from None


def scalar(text: str) -> Any:
    """An override's value: a YAML scalar or list, or else the text itself."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.line = line


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's SafeLoader, refusing a key (or a section) given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: overriding is its point
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in seen:
                raise _DuplicateKey(
                    f"{key!r} is given twice (first on line {seen[key]}); keep one", line
                )
            if isinstance(key, Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep)
