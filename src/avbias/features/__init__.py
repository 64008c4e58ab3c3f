"""Decode media once into memory-mappable tensor shards."""
