"""Risk's gRPC API: thin handlers (service.py) and the proto conversions (convert.py)."""
