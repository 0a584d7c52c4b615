"""Reading a YAML file a user wrote (``--config.file``, ``--web.config.file``), safely.

Whatever the file holds, the result is either plain data (mappings that remember the line
of each key and value, lists, and scalars) or one :class:`ConfigError` line naming
``file:line: field: problem``; never a traceback from inside PyYAML, and never unbounded
work:

- the bytes must be UTF-8 text (a byte-order mark is allowed) of at most
  :data:`MAX_BYTES`;
- nesting is bounded (:data:`MAX_DEPTH` levels), before PyYAML's recursive composer could
  exhaust the stack;
- every scalar is constructed on its own, so a value PyYAML cannot make (``2024-13-01``
  with an explicit ``!!timestamp``, ``!!int c``, an empty ``!!float``) names its field;
- dates stay text (no implicit timestamps: a label value ``2024-01-05`` is a string);
- a mapping or list used as a key, a key given twice, an alias that contains itself and
  text with a lone surrogate (``"\\ud800"``, not encodable as UTF-8) are refused.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set

import yaml

from .errors import ConfigError

#: Larger than any real configuration by far; bounds the time a start-up may take.
MAX_BYTES = 1 << 20
#: Nesting levels (mappings and lists in each other): the files need 4.
MAX_DEPTH = 32

_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class Mapping(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers its own line and the line of each key and value."""

    line = 0
    key_lines: Dict[Any, int]
    lines: Dict[Any, int]


class Sequence(list):  # type: ignore[type-arg]
    """A YAML list that remembers its own line and the line of each item."""

    line = 0
    lines: List[int]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with bounded nesting and without implicit timestamps."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, "nested more than %d levels deep" % MAX_DEPTH,
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class YamlFile:
    """One file: reads it and builds every ``file:line: field: problem`` message for it.

    ``label`` goes before the path (``"web config file "``).
    """

    def __init__(self, path: str, label: str = "") -> None:
        self.path = path
        self.label = label

    def error(self, line: int, where: str, problem: str) -> ConfigError:
        if where:
            return ConfigError("%s%s:%d: %s: %s" % (self.label, self.path, line, where, problem))
        return ConfigError("%s%s:%d: %s" % (self.label, self.path, line, problem))

    def read(self) -> str:
        """The file's text; ConfigError if it cannot be read, is too large or not UTF-8."""
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_BYTES + 1)
        except OSError as error:
            reason = error.strerror or str(error)
            if self.label:
                raise ConfigError("%s%s: cannot read it: %s" % (self.label, self.path, reason)) \
                    from None
            raise ConfigError("cannot read config file %s: %s" % (self.path, reason)) from None
        if len(data) > MAX_BYTES:
            raise ConfigError("%s%s: larger than %d KiB: not a configuration file"
                              % (self.label, self.path, MAX_BYTES // 1024))
        return self.decode(data)

    def decode(self, data: bytes) -> str:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise self.error(line, "", "not UTF-8 text (byte 0x%02X at offset %d): save the "
                             "file as UTF-8" % (data[error.start], error.start)) from None
        return text[1:] if text.startswith("\ufeff") else text

    def load(self, text: str) -> Any:
        """The document in ``text`` as plain data (see the module doc)."""
        loader: Optional[_Loader] = None
        try:
            loader = _Loader(text)  # the reader checks the characters here
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            raise self.error(mark.line + 1 if mark else 1, "not valid YAML",
                             error.problem or error.context or "not valid YAML") from None
        except yaml.reader.ReaderError as error:
            line = text.count("\n", 0, error.position) + 1
            character = error.character
            if isinstance(character, int):
                character = chr(character)
            raise self.error(line, "not valid YAML", "character %r is not allowed"
                             % (character,)) from None
        except yaml.YAMLError as error:
            raise self.error(1, "not valid YAML", " ".join(str(error).split())) from None
        finally:
            if loader is not None:
                loader.dispose()
        if node is None:
            return None
        return _Builder(loader, self).build(node, "")


class _Builder:
    """Turns composed nodes into data, naming the field of anything that cannot be built."""

    def __init__(self, loader: _Loader, source: YamlFile) -> None:
        self.loader = loader
        self.source = source
        self.built: Dict[int, Any] = {}
        self.building: Set[int] = set()

    def fail(self, node: yaml.Node, where: str, problem: str) -> ConfigError:
        return self.source.error(node.start_mark.line + 1, where or "document", problem)

    def build(self, node: yaml.Node, where: str) -> Any:
        if id(node) in self.built:  # an alias: the same object, built once
            return self.built[id(node)]
        if id(node) in self.building:
            raise self.fail(node, where, "an alias refers to a value that contains it")
        self.building.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                value: Any = self._mapping(node, where)
            elif isinstance(node, yaml.SequenceNode):
                value = Sequence()
                value.line, value.lines = node.start_mark.line + 1, []
                for index, item in enumerate(node.value):
                    value.append(self.build(item, "%s[%d]" % (where, index)))
                    value.lines.append(item.start_mark.line + 1)
            else:
                value = self._scalar(node, where)
        finally:
            self.building.discard(id(node))
        self.built[id(node)] = value
        return value

    def _mapping(self, node: yaml.MappingNode, where: str) -> Mapping:
        try:
            self.loader.flatten_mapping(node)  # `<<: *defaults` merge keys
        except yaml.MarkedYAMLError as error:
            raise self.fail(node, where, error.problem or "bad merge key") from None
        mapping = Mapping()
        mapping.line, mapping.lines, mapping.key_lines = node.start_mark.line + 1, {}, {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, where, "a %s cannot be a key" % (
                    "mapping" if isinstance(key_node, yaml.MappingNode) else "list"))
            key = self._scalar(key_node, where)
            try:
                duplicate = key in mapping
            except TypeError:  # only from a custom tag; scalars are hashable
                raise self.fail(key_node, where, "%r cannot be a key" % (key,)) from None
            if duplicate:
                raise self.fail(key_node, where, "duplicate key %r (give each once)" % (key,))
            inner = "%s.%s" % (where, key) if where else str(key)
            mapping[key] = self.build(value_node, inner)
            mapping.lines[key] = value_node.start_mark.line + 1
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping

    def _scalar(self, node: yaml.Node, where: str) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as error:  # an unknown tag
            raise self.fail(node, where, error.problem or "cannot be read") from None
        except Exception:  # noqa: BLE001 - whatever PyYAML fails with, the value is at fault
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise self.fail(node, where, "%r is not a valid %s" % (node.value, tag)) from None
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                raise self.fail(node, where, "contains %r, a lone surrogate: not text"
                                % value[error.start]) from None
        return value


def line_of(document: Any, where: str, default: int = 1) -> int:
    """The line where the dotted field ``where`` (``tls_server_config.min_version``) is
    written in a loaded document, or the deepest part of it that exists."""
    line = getattr(document, "line", default) or default
    current = document
    for part in where.split(".") if where else ():
        if not isinstance(current, Mapping) or part not in current:
            break
        line = current.key_lines.get(part, line)
        current = current[part]
    return line

