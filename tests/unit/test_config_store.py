"""Config for the store: [store] notify_channel, the channel PostgreSQL replicas wake on."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskpass.server.config import parse_config
from taskpass.server.errors import ConfigError
from taskpass.server.store.factory import open_store
from taskpass.server.store.postgres import PostgresStore
from tests.unit.test_config import MINIMAL

RULE = (
    "use 1 to 63 characters, lower-case letters a-z, digits and underscores, "
    "starting with a letter or an underscore"
)


def test_the_channel_defaults_to_taskpass_events(tmp_path: Path) -> None:
    assert parse_config(MINIMAL, base_dir=tmp_path).store.notify_channel == "taskpass_events"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("billing_taskpass", id="letters-and-underscore"),
        pytest.param("_tp2", id="leading-underscore-and-digit"),
        pytest.param("a" * 63, id="63-characters"),
    ],
)
def test_a_channel_name_that_is_a_plain_identifier_is_read(tmp_path: Path, name: str) -> None:
    config = parse_config(f'{MINIMAL}\n[store]\nnotify_channel = "{name}"\n', base_dir=tmp_path)
    assert config.store.notify_channel == name


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param('"taskpass-events"', "'taskpass-events'", id="hyphen"),
        pytest.param('"Taskpass"', "'Taskpass'", id="upper-case"),
        pytest.param('"1taskpass"', "'1taskpass'", id="leading-digit"),
        pytest.param('"tp events"', "'tp events'", id="space"),
        pytest.param('"tp;NOTIFY x"', "'tp;NOTIFY x'", id="sql"),
        pytest.param('"ünï"', "'ünï'", id="non-ascii"),
        pytest.param(f'"{"a" * 64}"', f"'{'a' * 64}'", id="64-characters"),
    ],
)
def test_a_channel_name_that_is_not_a_plain_identifier_is_refused_saying_what_is_allowed(
    tmp_path: Path, value: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"{MINIMAL}\n[store]\nnotify_channel = {value}\n", base_dir=tmp_path)

    assert caught.value.message == (
        f"config: store.notify_channel: {shown} is not a usable NOTIFY channel name: {RULE}"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param('""', "config: store.notify_channel must be a non-empty string", id="empty"),
        pytest.param("7", "config: store.notify_channel must be a non-empty string", id="number"),
    ],
)
def test_a_channel_that_is_not_a_string_is_refused(
    tmp_path: Path, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"{MINIMAL}\n[store]\nnotify_channel = {value}\n", base_dir=tmp_path)

    assert caught.value.message == message


def test_the_postgres_store_is_opened_on_the_configured_channel() -> None:
    store = open_store("postgresql://taskpass@db.invalid/taskpass", notify_channel="billing_tp")

    assert isinstance(store, PostgresStore)
    assert store.notify_channel == "billing_tp"


def test_the_store_refuses_a_bad_channel_even_without_the_config() -> None:
    with pytest.raises(ConfigError) as caught:
        open_store("postgresql://taskpass@db.invalid/taskpass", notify_channel="tp-events")

    assert caught.value.message == (
        f"store.notify_channel: 'tp-events' is not a usable NOTIFY channel name: {RULE}"
    )
