"""Approvals: a pending decision becomes a request that an approver decides and the requester
uses once (see service.py); signals.py wakes waiting exchanges and live watchers."""
