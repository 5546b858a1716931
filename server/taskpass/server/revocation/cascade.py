"""The events of the delegated credentials one revocation takes with it.

The store calls a CascadeSigner inside its transaction, on its writer thread, once per delegated
credential revoked (store/cascade.py says which), so it only signs: no clock, no key-ring update,
no I/O. It remembers what it signed; after the commit the revocation service reports those
credentials and keeps their SETs' keys published (`published`).
"""

from __future__ import annotations

import datetime as dt

from taskpass.server.revocation.events import EventSigner, Initiator
from taskpass.server.store.records import CredentialRecord, NewRevocation


class CascadeSigner:
    def __init__(self, signer: EventSigner, *, at: dt.datetime, initiator: Initiator) -> None:
        self._signer = signer
        self._at = at
        self._initiator = initiator
        # by jti: a batch the store runs again signs the same credentials again
        self._signed: dict[str, tuple[CredentialRecord, NewRevocation]] = {}

    def __call__(self, credential: CredentialRecord) -> NewRevocation:
        event = self._signer.credential(
            credential,
            reason=credential.revoke_reason,
            initiator=self._initiator,
            at=self._at,
            publish=False,
        )
        self._signed[credential.jti] = (credential, event)
        return event

    @property
    def credentials(self) -> tuple[CredentialRecord, ...]:
        """The delegated credentials revoked, as stored (valid once the store call returned)."""
        return tuple(credential for credential, _ in self._signed.values())

    def published(self) -> None:
        """After the commit: keep each event's signing key in the JWKS while it is in force."""
        for _, event in self._signed.values():
            self._signer.keep_published(event)
