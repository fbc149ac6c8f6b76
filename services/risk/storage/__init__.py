"""Risk's SQL, one module per aggregate: plain asyncpg, bound parameters, short
explicit transactions, domain types out."""
