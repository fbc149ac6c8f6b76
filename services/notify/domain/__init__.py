"""Notify's rules: which kinds exist, who may send them, where each may go, how they read."""
