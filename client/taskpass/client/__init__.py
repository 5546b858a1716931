"""taskpass client SDK: the one public surface for agents, sidecars, approvers and admins.

An agent exchanges its attested identity and a task for a task-scoped credential:

    async with TaskpassClient.from_files("localhost:8443", ca=..., cert=..., key=...) as client:
        async with client.task("t-42", audience="payments-api", action="read") as task:
            credential = await task.credential()

A relying party verifies one offline, bound to the caller's certificate:

    verifier = CredentialVerifier.for_issuer("https://taskpass.example", audience="payments-api")
    verified = await verifier.verify(token, peer_certificate=peer_der)

Every error is a TaskpassClientError (see errors.py for the tree); gRPC errors never surface raw.
"""

from taskpass.client.admin import AdminClient, AuditRecord, AuditVerification, PolicyInfo
from taskpass.client.approvals import Approval, ApprovalsClient
from taskpass.client.client import TaskpassClient
from taskpass.client.errors import (
    ApprovalPending,
    AttestationFailed,
    Denied,
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    StoreCorrupted,
    TaskpassClientError,
    Unavailable,
)
from taskpass.client.models import Introspection, Task, TaskCredential
from taskpass.client.revocations import Ban, RevocationAdmin, RevokeResult
from taskpass.client.sync import SyncCredentialVerifier, SyncTaskHandle, SyncTaskpassClient
from taskpass.client.task_handle import TaskHandle
from taskpass.client.verifier import CredentialVerifier, InvalidToken, Reason, VerifiedCredential
from taskpass.client.watcher import Revocation, RevocationWatcher
from taskpass.client.workload_api import from_workload_api, from_x509_source

__all__ = [
    "AdminClient",
    "Approval",
    "ApprovalPending",
    "ApprovalsClient",
    "AttestationFailed",
    "AuditRecord",
    "AuditVerification",
    "Ban",
    "CredentialVerifier",
    "Denied",
    "FailedPrecondition",
    "Introspection",
    "InvalidRequest",
    "InvalidToken",
    "NotFound",
    "PermissionDenied",
    "PolicyInfo",
    "Reason",
    "ResourceExhausted",
    "Revocation",
    "RevocationAdmin",
    "RevocationWatcher",
    "RevokeResult",
    "StoreCorrupted",
    "SyncCredentialVerifier",
    "SyncTaskHandle",
    "SyncTaskpassClient",
    "Task",
    "TaskCredential",
    "TaskHandle",
    "TaskpassClient",
    "TaskpassClientError",
    "Unavailable",
    "VerifiedCredential",
    "from_workload_api",
    "from_x509_source",
]
