"""The CascadeSigner the store calls per delegated credential: it signs on the writer's thread
without touching the key ring, and keeps the keys published only once told the events are stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from taskpass.server.issuer.keys import KeyRing
from taskpass.server.revocation.cascade import CascadeSigner
from taskpass.server.revocation.events import EventSigner, Initiator
from taskpass.server.store.records import RevocationKind
from tests.unit.store.builders import T0, credential

LATER = T0 + dt.timedelta(minutes=1)


def test_each_credential_gets_its_own_event_at_the_revocations_time(
    signer: EventSigner,
) -> None:
    cascade = CascadeSigner(signer, at=LATER, initiator=Initiator.ADMIN)
    record = credential("d1", ttl=dt.timedelta(minutes=30))
    record = dataclasses.replace(record, parent_jti="root", revoked_at=LATER, revoke_reason="r")

    event = cascade(record)

    assert (event.kind, event.jti, event.at, event.reason) == (
        RevocationKind.CREDENTIAL,
        "d1",
        LATER,
        "r",
    )
    assert cascade.credentials == (record,)


def test_signing_leaves_the_key_ring_alone_until_the_events_are_published(
    signer: EventSigner, ring: KeyRing
) -> None:
    before = ring.active.max_token_expiry
    cascade = CascadeSigner(signer, at=LATER, initiator=Initiator.ADMIN)
    record = dataclasses.replace(
        credential("d1", ttl=dt.timedelta(hours=2)), parent_jti="root", revoked_at=LATER
    )

    assert before is None or before < record.expires_at  # so a note would move it

    cascade(record)
    assert ring.active.max_token_expiry == before

    cascade.published()
    after = ring.active.max_token_expiry
    assert after is not None
    assert after >= record.expires_at


def test_a_batch_run_again_reports_each_credential_once(signer: EventSigner) -> None:
    cascade = CascadeSigner(signer, at=LATER, initiator=Initiator.ADMIN)
    first = dataclasses.replace(credential("d1"), parent_jti="root", revoked_at=LATER)
    second = dataclasses.replace(credential("d2"), parent_jti="d1", revoked_at=LATER)

    for record in (first, second, first, second):  # the store retried its batch
        cascade(record)

    assert [c.jti for c in cascade.credentials] == ["d1", "d2"]
