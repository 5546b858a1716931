"""The SDK's public surface is declared once; this test fails when it drifts unnoticed."""

from __future__ import annotations

import taskpass.client as sdk
from taskpass.client.errors import TaskpassClientError

EXPECTED = {
    "AdminClient", "Approval", "ApprovalPending", "ApprovalsClient", "AttestationFailed",
    "AuditRecord", "AuditVerification", "Ban", "CredentialVerifier", "Denied",
    "FailedPrecondition", "Introspection", "InvalidRequest", "InvalidToken", "NotFound",
    "PermissionDenied", "PolicyInfo", "Reason", "ResourceExhausted", "Revocation",
    "RevocationAdmin", "RevocationWatcher", "RevokeResult", "StoreCorrupted",
    "SyncCredentialVerifier", "SyncTaskHandle", "SyncTaskpassClient", "Task", "TaskCredential",
    "TaskHandle", "TaskpassClient", "TaskpassClientError", "Unavailable", "VerifiedCredential",
    "from_workload_api", "from_x509_source",
}  # fmt: skip


def test_all_lists_exactly_the_public_names() -> None:
    assert set(sdk.__all__) == EXPECTED
    assert len(sdk.__all__) == len(EXPECTED)


def test_every_public_name_is_importable() -> None:
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None, name


def test_every_public_error_is_a_taskpass_client_error() -> None:
    errors = [getattr(sdk, n) for n in sdk.__all__ if n.endswith(("Error", "Failed", "Token"))]
    errors += [sdk.Denied, sdk.ApprovalPending, sdk.NotFound, sdk.Unavailable, sdk.StoreCorrupted]
    for error in errors:
        assert issubclass(error, TaskpassClientError), error
