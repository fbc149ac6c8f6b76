"""Identity: the group ID, credentials, passkeys and TOTP, devices, sessions, verified contacts and
the tokens other services trust.
"""
