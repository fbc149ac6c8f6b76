"""Outbound: identity's contact directory and the channel providers."""
