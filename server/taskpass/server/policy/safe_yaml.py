"""YAML for security-owned files: safe types only, bounded size, and no silently repeated keys.

PyYAML's safe loader keeps the last of two equal keys; in a policy that would let a second `when:`
quietly replace the first, so a repeated key is an error here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from taskpass.server.errors import ConfigError

MAX_DOCUMENT_BYTES = 1024 * 1024


class _StrictSafeLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _StrictSafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            repeated = key in seen
        except TypeError:  # an unhashable key; the default constructor reports it properly
            break
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictSafeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml(raw: bytes, *, source: str) -> object:
    """Parse one YAML document, raising ConfigError that names `source` and the line."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_DOCUMENT_BYTES} bytes; split or trim it")
    try:
        return yaml.load(raw, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1} column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from exc


def read_bounded(path: Path) -> bytes:
    """Read a file, refusing one larger than MAX_DOCUMENT_BYTES without reading all of it."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror}); check the path") from exc
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_DOCUMENT_BYTES} bytes; split or trim it")
    return raw
