"""The taskpass server: attestation, policy, issuance and storage behind a gRPC API."""
