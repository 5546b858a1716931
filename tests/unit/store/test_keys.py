"""The published-keys aggregate (the shared JWKS), on both backends."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from taskpass.server.errors import Conflict
from taskpass.server.store.base import MAX_PAGE, Store
from taskpass.server.store.records import AuditEntry, PublishedKey

from .builders import T0, entry
from .conftest import StoreMaker

HOUR = dt.timedelta(hours=1)


def published(
    kid: str = "kid-a", *, x: str = "x-a", until: dt.datetime = T0 + HOUR, by: str = "replica-a"
) -> PublishedKey:
    return PublishedKey(
        kid=kid,
        jwk={"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"},
        published_by=by,
        published_at=T0,
        publish_until=until,
    )


async def audit_kinds(store: Store) -> list[str]:
    return [r.kind for r in await store.audit.read(limit=MAX_PAGE)]


async def test_a_new_key_is_stored_listed_and_audited_once(store: Store) -> None:
    key = published()

    stored = await store.keys.publish(key, audit=entry("key_published", kid="kid-a"))
    again = await store.keys.publish(key, audit=entry("key_published", kid="kid-a"))

    assert stored == key
    assert again == key
    assert await store.keys.list_published(T0) == [key]
    assert await audit_kinds(store) == ["key_published"]


async def test_publishing_again_extends_but_never_shortens_the_publication(store: Store) -> None:
    await store.keys.publish(published(until=T0 + HOUR), audit=entry())

    longer = await store.keys.publish(
        published(until=T0 + 3 * HOUR, by="replica-a2"), audit=entry()
    )
    shorter = await store.keys.publish(published(until=T0 + 2 * HOUR), audit=entry())

    assert longer.publish_until == T0 + 3 * HOUR
    assert longer.published_by == "replica-a2"
    assert longer.published_at == T0  # the first publication's time stays
    assert shorter == longer
    assert (await store.keys.list_published(T0))[0].publish_until == T0 + 3 * HOUR


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        pytest.param(T0, ["kid-a", "kid-b"], id="both-live"),
        pytest.param(T0 + HOUR, ["kid-b"], id="at-the-end-of-a"),
        pytest.param(T0 + 2 * HOUR, [], id="both-over"),
    ],
)
async def test_only_keys_published_past_now_are_listed(
    store: Store, at: dt.datetime, expected: list[str]
) -> None:
    await store.keys.publish(published("kid-a", until=T0 + HOUR), audit=entry())
    await store.keys.publish(published("kid-b", x="x-b", until=T0 + 2 * HOUR), audit=entry())

    assert [k.kid for k in await store.keys.list_published(at)] == expected


async def test_a_kid_published_with_another_jwk_is_a_conflict(store: Store) -> None:
    await store.keys.publish(published(), audit=entry())

    with pytest.raises(Conflict, match="different JWK"):
        await store.keys.publish(published(x="x-forged", until=T0 + 9 * HOUR), audit=entry())

    assert (await store.keys.list_published(T0))[0] == published()
    assert await audit_kinds(store) == ["issuance"]


async def test_published_keys_survive_a_restart(make_store: StoreMaker) -> None:
    key = dataclasses.replace(published(), published_at=T0 + dt.timedelta(microseconds=7))
    async with make_store() as first:
        await first.keys.publish(key, audit=entry())
    async with make_store() as second:
        assert await second.keys.list_published(T0) == [key]


def unshared(key: PublishedKey) -> AuditEntry:
    return AuditEntry(kind="key_unshared", actor="taskpass-server", at=T0, payload={"kid": key.kid})


async def test_removing_ended_publications_deletes_exactly_what_is_no_longer_listed(
    store: Store,
) -> None:
    ended = published("kid-ended", x="x-e", until=T0 - HOUR)
    ending_now = published("kid-now", x="x-n", until=T0)
    live = published("kid-live", x="x-l", until=T0 + dt.timedelta(microseconds=1))
    for key in (live, ending_now, ended):
        await store.keys.publish(key, audit=entry("key_shared"))

    removed = await store.keys.remove_ended(T0, audit=unshared)

    assert [k.kid for k in removed] == ["kid-ended", "kid-now"]
    assert await store.keys.list_published(T0 - 2 * HOUR) == [live]  # all the table still holds
    assert await store.keys.list_published(T0) == [live]  # what was published is unchanged
    records = await store.audit.read(limit=MAX_PAGE)
    assert [(r.kind, r.payload.get("kid")) for r in records[3:]] == [
        ("key_unshared", "kid-ended"),
        ("key_unshared", "kid-now"),
    ]


async def test_a_retired_keys_publication_until_its_last_token_expires_is_kept(
    store: Store,
) -> None:
    # A retired key is published until the expiry of the last token it signed (shared_jwks):
    # long after its lease would have ended, it stays while a token may still be presented.
    last_token_expiry = T0 + 30 * HOUR
    retired = published("kid-retired", until=last_token_expiry)
    await store.keys.publish(retired, audit=entry("key_shared"))

    kept = await store.keys.remove_ended(
        last_token_expiry - dt.timedelta(seconds=1), audit=unshared
    )
    after_expiry = await store.keys.remove_ended(last_token_expiry, audit=unshared)

    assert kept == []
    assert after_expiry == [retired]
    assert await store.keys.list_published(T0) == []


async def test_nothing_ended_removes_nothing_and_audits_nothing(store: Store) -> None:
    await store.keys.publish(published(until=T0 + HOUR), audit=entry("key_shared"))

    assert await store.keys.remove_ended(T0, audit=unshared) == []
    assert await audit_kinds(store) == ["key_shared"]


async def test_a_removed_key_published_again_is_new_again(store: Store) -> None:
    await store.keys.publish(published(until=T0), audit=entry("key_shared"))
    await store.keys.remove_ended(T0, audit=unshared)

    again = await store.keys.publish(published(until=T0 + HOUR), audit=entry("key_shared"))

    assert again.publish_until == T0 + HOUR
    assert await audit_kinds(store) == ["key_shared", "key_unshared", "key_shared"]
