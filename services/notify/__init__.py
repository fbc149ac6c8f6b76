"""Notify: notices that always reach the registered address, with retries and a delivery log."""
