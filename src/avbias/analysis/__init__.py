"""Analysis: pure functions on arrays (no model, no shards)."""
