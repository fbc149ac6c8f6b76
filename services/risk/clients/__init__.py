"""Outbound: notify (operator alerts through the outbox) and the country database."""
