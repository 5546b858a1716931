"""Several replicas on one database: what one commits, the others learn of (see changes.py)."""
