"""Operator tools: the `mamoru` command, a gRPC client of the services (never their storage)."""
