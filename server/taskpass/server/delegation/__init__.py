"""Delegation (RFC 8693 token exchange): a sub-agent trades its parent's credential for a
narrower one of its own, and the chain of hops stays visible in the `act` claim."""
