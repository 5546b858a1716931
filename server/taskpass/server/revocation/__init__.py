"""Revocation: signed revocation events (events.py), the in-memory ban list (bans.py), the live
fan-out of the event log to subscribers (hub.py) and the revoke / ban domain service (service.py).
"""
