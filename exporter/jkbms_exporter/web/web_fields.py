"""Checking the fields of a loaded web config document: each problem names its field."""

from __future__ import annotations

from typing import Any, Dict, List, Optional


class Problem(Exception):
    """A problem at a field (dotted path); made ``file:line: field: problem`` by the caller."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__("%s: %s" % (where, message) if where else message)
        self.where = where
        self.message = message


def kind(value: Any) -> str:
    for type_, name in ((bool, "a boolean"), (dict, "a mapping"), (list, "a list"),
                       (str, "a string"), ((int, float), "a number")):
        if isinstance(value, type_):  # type: ignore[arg-type]
            return name
    return "empty" if value is None else type(value).__name__


def string(section: Dict[str, Any], key: str, where: str) -> Optional[str]:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise Problem("%s.%s" % (where, key), "must be a non-empty string")
    return value


def string_list(section: Dict[str, Any], key: str, where: str) -> List[str]:
    value = section.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise Problem("%s.%s" % (where, key), "must be a list of strings")
    return value


def boolean(section: Dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = section.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Problem("%s.%s" % (where, key), "must be true or false")
    return value
