"""notify's SQL, one module per aggregate, returning domain types."""
