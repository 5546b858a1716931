"""Generated gRPC code for taskpass.v1 (private)."""
