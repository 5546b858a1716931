"""The reloadable policy source: only signed, compiling documents replace the policy in force."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.errors import ConfigError
from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.policy import signing
from taskpass.server.policy.signing import PolicyVerifier, Signer
from taskpass.server.policy.source import ReloadablePolicy
from taskpass.server.store.records import AuditRecord
from taskpass.server.store.sqlite import SqliteStore

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
ADMIN = Workload(
    id="spiffe://example.org/security/admin",
    method=AttestationMethod.X509_SVID,
    trust_domain="example.org",
    expires_at=NOW + dt.timedelta(days=1),
    cert_thumbprint="admin-thumb",
)
GROUPS = ("security-approvers",)


def document(label: str, *, approvers: str = "security-approvers", when: str = "") -> bytes:
    condition = f"\n    when: {when}" if when else ""
    return f"""version: "{label}"
rules:
  - id: grant.read
    effect: grant
    actions: [read]
    scopes: ["x:read"]{condition}
  - id: approval.write
    effect: require_approval
    actions: [write]
    approvers: [{approvers}]
""".encode()


class Files:
    """A policy file and its signature, written as an admin would."""

    def __init__(self, directory: Path) -> None:
        self.file = directory / "policy.yaml"
        self.key = signing.generate_key()

    def write(self, content: bytes, *, signed: bool = True, sign_as: bytes | None = None) -> None:
        self.file.write_bytes(content)
        sig = signing.signature_path(self.file)
        if signed:
            sig.write_bytes(signing.sign(sign_as or content, self.key))
        else:
            sig.unlink(missing_ok=True)
        bump(self.file)

    def signature(self, content: bytes) -> bytes:
        return signing.sign(content, self.key)


def bump(path: Path) -> None:
    """Make a rewrite visible to an mtime check even within one clock tick."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "t.db") as opened:
        yield opened


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def source(
    files: Files, store: SqliteStore, *, require: bool = True, signers: bool = True
) -> ReloadablePolicy:
    keys = [Signer.from_pem(signing.public_pem(files.key), source="k")] if signers else []
    return ReloadablePolicy(
        file=files.file,
        verifier=PolicyVerifier(keys),
        require_signature=require,
        known_groups=GROUPS,
        audit=store.audit,
        clock=FixedClock(NOW),
    )


async def audit(store: SqliteStore) -> list[AuditRecord]:
    return await store.audit.read(limit=100)


async def test_startup_loads_a_signed_file_and_audits_who_signed_it(
    files: Files, store: SqliteStore
) -> None:
    files.write(document("v1"))
    policy = source(files, store)

    loaded = await policy.start()

    assert policy.current().document.version_label == "v1"
    assert loaded.signer == Signer.from_pem(signing.public_pem(files.key), source="k").key_id
    [record] = await audit(store)
    assert record.kind == "policy_loaded"
    assert record.payload["how"] == "startup"
    assert record.payload["policy_version"] == loaded.version
    assert record.payload["signer"] == loaded.signer


@pytest.mark.parametrize(
    ("signed", "sign_as", "phrase"),
    [
        pytest.param(False, None, "unsigned policy refused", id="unsigned"),
        pytest.param(True, b"another document", "bad signature", id="bad-signature"),
    ],
)
async def test_startup_refuses_an_unsigned_or_badly_signed_file(
    files: Files, store: SqliteStore, signed: bool, sign_as: bytes | None, phrase: str
) -> None:
    files.write(document("v1"), signed=signed, sign_as=sign_as)

    with pytest.raises(ConfigError, match=phrase):
        await source(files, store).start()


def test_requiring_signatures_without_signers_is_a_config_error(
    files: Files, store: SqliteStore
) -> None:
    with pytest.raises(ConfigError, match=r"policy\.signers is empty"):
        source(files, store, signers=False)


async def test_an_admin_loads_a_signed_document_and_it_is_in_force_and_audited(
    files: Files, store: SqliteStore
) -> None:
    files.write(document("v1"))
    policy = source(files, store)
    first = await policy.start()
    new = document("v2")

    loaded = await policy.load(new, files.signature(new), by=ADMIN)

    assert policy.current().document.version_label == "v2"
    assert loaded.loaded_by == ADMIN.id
    record = (await audit(store))[-1]
    assert (record.kind, record.actor) == ("policy_loaded", ADMIN.id)
    assert record.payload["previous_version"] == first.version
    assert record.payload["workload"]["cert_sha256"] == "admin-thumb"


@pytest.mark.parametrize(
    ("content", "signature_of", "phrase"),
    [
        pytest.param(document("v2"), None, "unsigned policy refused", id="unsigned"),
        pytest.param(document("v2"), document("v3"), "bad signature", id="bad-signature"),
        pytest.param(
            document("v2", approvers="ghosts"),
            "self",
            "ghosts are not defined",
            id="unknown-approver-group",
        ),
        pytest.param(
            document("v2", when="task.sensitivty > 1"), "self", "grant.read", id="bad-cel"
        ),
        pytest.param(b"rules: [", "self", "invalid YAML", id="not-yaml"),
    ],
)
async def test_a_refused_document_keeps_the_policy_in_force_and_is_audited(
    files: Files,
    store: SqliteStore,
    content: bytes,
    signature_of: bytes | str | None,
    phrase: str,
) -> None:
    files.write(document("v1"))
    policy = source(files, store)
    await policy.start()
    signature = None
    if signature_of is not None:
        signature = files.signature(content if signature_of == "self" else signature_of)  # type: ignore[arg-type]

    with pytest.raises(ConfigError, match=phrase):
        await policy.load(content, signature, by=ADMIN)

    assert policy.current().document.version_label == "v1"
    record = (await audit(store))[-1]
    assert (record.kind, record.actor) == ("policy_refused", ADMIN.id)
    assert record.payload["kept_version"] == policy.loaded.version


async def test_a_new_signed_file_is_picked_up(files: Files, store: SqliteStore) -> None:
    files.write(document("v1"))
    policy = source(files, store)
    await policy.start()
    assert await policy.reload_if_changed() is None

    files.write(document("v2"))
    loaded = await policy.reload_if_changed()

    assert loaded is not None
    assert policy.current().document.version_label == "v2"
    assert (await audit(store))[-1].payload["how"] == "file"


async def test_a_file_changed_before_its_signature_is_refused_until_the_signature_follows(
    files: Files, store: SqliteStore
) -> None:
    files.write(document("v1"))
    policy = source(files, store)
    await policy.start()
    new = document("v2")

    files.file.write_bytes(new)  # the admin copies the document first ...
    bump(files.file)
    assert await policy.reload_if_changed() is None
    assert policy.current().document.version_label == "v1"
    assert (await audit(store))[-1].kind == "policy_refused"
    assert await policy.reload_if_changed() is None  # not retried while nothing changes

    signing.signature_path(files.file).write_bytes(files.signature(new))  # ... then its .sig
    assert await policy.reload_if_changed() is not None
    assert policy.current().document.version_label == "v2"


async def test_an_unsigned_replacement_file_is_refused(files: Files, store: SqliteStore) -> None:
    files.write(document("v1"))
    policy = source(files, store)
    await policy.start()

    files.write(document("v2"), signed=False)

    assert await policy.reload_if_changed() is None
    assert policy.current().document.version_label == "v1"


async def test_dev_mode_accepts_an_unsigned_policy(files: Files, store: SqliteStore) -> None:
    files.write(document("v1"), signed=False)
    policy = source(files, store, require=False, signers=False)

    loaded = await policy.start()

    assert loaded.signer is None
    assert (await audit(store))[-1].payload["signer"] is None


async def test_dev_mode_still_refuses_a_bad_signature_when_signers_are_configured(
    files: Files, store: SqliteStore
) -> None:
    files.write(document("v1"), sign_as=b"something else")

    with pytest.raises(ConfigError, match="bad signature"):
        await source(files, store, require=False).start()
