"""Identity's outbound side: risk, notify and wallet through the outbox, identity providers,
and the revocation stream other services follow."""
