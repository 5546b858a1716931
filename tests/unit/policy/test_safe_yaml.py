from __future__ import annotations

from pathlib import Path

import pytest

from taskpass.server.errors import ConfigError
from taskpass.server.policy.safe_yaml import MAX_DOCUMENT_BYTES, load_yaml, read_bounded


def test_repeated_key_is_an_error_not_a_silent_override() -> None:
    with pytest.raises(ConfigError, match=r"line 3 column 5: key 'when' appears twice"):
        load_yaml(b"rules:\n  - when: a\n    when: b\n", source="p.yaml")


def test_python_tags_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"p\.yaml: invalid YAML"):
        load_yaml(b"x: !!python/object/apply:os.system ['true']\n", source="p.yaml")


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError, match="line 2 column 4"):
        load_yaml(b"a: 1\nb: : c\n", source="p.yaml")


def test_oversized_document_is_refused_before_parsing() -> None:
    with pytest.raises(ConfigError, match="larger than"):
        load_yaml(b"#" * (MAX_DOCUMENT_BYTES + 1), source="p.yaml")


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_DOCUMENT_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        read_bounded(path)


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_bounded(tmp_path / "absent.yaml")
