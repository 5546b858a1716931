"""Generated protobuf code (private)."""
