"""``flock top``: a live terminal dashboard over the trace store (Textual)."""
