"""taskpass client SDK: exchange an attested identity and a task for a task-scoped credential.

async with TaskpassClient.from_files("localhost:8443", ca=..., cert=..., key=...) as client:
    credential = await client.exchange(Task(task_id="t-42", audience="payments-api",
                                            action="read", sensitivity="internal", ttl=600))
"""

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
    TaskpassClientError,
    Unavailable,
)
from taskpass.client.models import Introspection, Task, TaskCredential

__all__ = [
    "ApprovalPending",
    "AttestationFailed",
    "Denied",
    "FailedPrecondition",
    "Introspection",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Task",
    "TaskCredential",
    "TaskpassClient",
    "TaskpassClientError",
    "Unavailable",
]
