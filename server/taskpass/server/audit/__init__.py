"""The audit trail as auditors see it: export and whole-log verification (the chain itself is
store/audit_chain.py; records are appended by each domain service with its state change)."""
