"""The local stack `make run` starts: PostgreSQL, the four services and the
stand-ins for outside parties (an SMTP server that keeps what it receives)."""
