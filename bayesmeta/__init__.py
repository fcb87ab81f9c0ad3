"""bayesmeta."""
