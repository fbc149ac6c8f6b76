"""Part of the partner gateway."""
