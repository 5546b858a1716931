"""The real server with one part cut out, to see what each part of an exchange costs.

Only for the "where the ratio goes" figure of `python -m bench`: the headline figures always run
the whole server. A cut patches one seam of the real TaskpassServer before it starts, so
everything else (the listener, TLS, the interceptor, the servicer registration) is the real code:

- `reply`: Exchange answers a canned response of a realistic size right after the request is
  parsed. The call still goes through the real interceptor (attestation of the caller's
  certificate, request id, authorization, metrics); no policy, signing or storage.
- `store`: the whole exchange (ban check, policy, signing, the task, credential and audit records)
  except the durable write: the store's writer acknowledges the issuance without running it, so
  no SQLite statement, audit hash or commit. (Every other write is skipped as well, the key
  publication at start-up and its renewals included; none of them is on the exchange's path.)
"""

from __future__ import annotations

from typing import Any

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass.server.api.credential_servicer import CredentialServicer
from taskpass.server.store.sqlite_writer import BatchWriter, WriteFn

CUTS = ("reply", "store")


def _canned_response() -> pb.ExchangeResponse:
    # The sizes of a real dev-policy response: an ES256 at+jwt of about 900 characters, 22-char ids.
    response = pb.ExchangeResponse()
    response.credential.token = "t" * 900
    response.credential.jti = "j" * 22
    response.credential.scopes.append("read")
    response.credential.token_type = "Bearer"
    response.decision.decision_id = "d" * 22
    response.decision.outcome = "allow"
    response.decision.policy_version = "p" * 64
    response.decision.matched_rules.append("billing-read")
    return response


def _answer_canned() -> None:
    canned = _canned_response()

    async def exchange(self: CredentialServicer, request: pb.ExchangeRequest, context: Any) -> Any:
        if not request.HasField("task"):  # the parse the real handler starts with
            raise ValueError("no task")
        return canned

    CredentialServicer.Exchange = exchange  # type: ignore[method-assign]


def _skip_durable_write() -> None:
    async def submit(self: BatchWriter, fn: WriteFn[Any]) -> Any:
        return None  # record_issuance's write returns None too

    BatchWriter.submit = submit  # type: ignore[method-assign]


def apply(cut: str) -> None:
    """Patch the server code in this process; call before the server starts."""
    if cut == "reply":
        _answer_canned()
    elif cut == "store":
        _skip_durable_write()
    else:
        raise ValueError(f"unknown cut {cut!r}: choose from {', '.join(CUTS)}")
