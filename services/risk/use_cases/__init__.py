"""What risk does, one module per group of RPCs; outside parties are reached through ports."""
