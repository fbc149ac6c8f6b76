"""Risk rules, policies and decisions: pure Python, no I/O."""
