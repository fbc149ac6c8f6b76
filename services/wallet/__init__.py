"""Wallet: payer accounts isolated from the group ID, a double-entry ledger, top-ups, one-time
payment codes, refunds, compensation and wind-down.
"""
