"""The partner gateway: HTTP/JSON with OAuth2 client credentials in front of the wallet."""
