"""Workload attestation: who is calling, proven by an X.509-SVID, a JWT-SVID or a mapped cert."""
