"""Identity's SQL, one module per aggregate. Each function takes a connection; callers own
the transaction."""

from __future__ import annotations

from typing import Any

# A row as asyncpg returns it.
Record = Any
