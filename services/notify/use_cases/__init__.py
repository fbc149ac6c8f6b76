"""What notify does, one module per group of RPCs, on the ports in ports.py."""
