"""Live streaming to HLS/DASH (built by the Live streaming feature)."""
