"""The wallet's rules, with no I/O: limits, one-time codes, request fingerprints."""
