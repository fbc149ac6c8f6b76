"""Risk: real-time decisions, credential-stuffing detection, kill switches, alerts, cases and
victim queries.
"""
