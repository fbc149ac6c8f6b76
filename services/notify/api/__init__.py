"""notify's gRPC handlers and the translation between the contract and the use cases."""
