"""Small shared helpers (file output, progress)."""
