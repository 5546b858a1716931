"""`taskpass db migrate`: migrates the configured store, either backend, and says to what."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from taskpass.server.cli.main import main
from taskpass.server.store import postgres_schema, sqlite_schema
from tests.support.postgres import fresh_schema, raw_connection

CONFIG = """
[listen]
cert_file = "server.pem"
key_file = "server.key"
client_ca_files = ["bundle.pem"]

[trust_domains."example.org"]
bundles = ["bundle.pem"]

[attestation]
jwt_audience = "spiffe://example.org/taskpass/server"

[policy]
file = "policy.yaml"

[issuer]
issuer = "https://taskpass.example.org"
"""


def config_file(tmp_path: Path, dsn: str | None = None) -> Path:
    text = CONFIG if dsn is None else CONFIG + f'\n[store]\ndsn = "{dsn}"\n'
    path = tmp_path / "taskpass.toml"
    path.write_text(text)
    return path


def test_migrate_creates_the_sqlite_database_of_the_config_and_is_repeatable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path)

    assert main(["db", "migrate", "--config", str(config)]) == 0
    assert main(["db", "migrate", "--config", str(config)]) == 0

    out = capsys.readouterr().out
    assert out.count(f"schema at version {sqlite_schema.LATEST_VERSION}") == 2
    conn = sqlite3.connect(tmp_path / "data" / "taskpass.db")
    try:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    finally:
        conn.close()
    assert [v for (v,) in versions] == [m.version for m in sqlite_schema.MIGRATIONS]


@pytest.mark.postgres
async def test_migrate_brings_the_postgres_schema_up_without_printing_the_dsn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fresh_schema() as dsn:
        config = config_file(tmp_path, dsn)

        # main runs its own event loop: give it a thread, as the shell would a process.
        code = await asyncio.to_thread(main, ["db", "migrate", "--config", str(config)])

        async with raw_connection(dsn) as conn:
            version = await conn.fetchval("SELECT max(version) FROM schema_version")

    out = capsys.readouterr().out
    assert code == 0
    assert out.strip() == f"PostgreSQL: schema at version {postgres_schema.LATEST_VERSION}"
    assert version == postgres_schema.LATEST_VERSION


def test_migrate_against_an_unreachable_server_fails_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, "postgresql://taskpass:hunter2@127.0.0.1:1/taskpass")

    assert main(["db", "migrate", "--config", str(config)]) == 2

    err = capsys.readouterr().err
    assert "PostgreSQL is unreachable" in err
    assert "hunter2" not in err
