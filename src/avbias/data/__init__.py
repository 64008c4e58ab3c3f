"""Datasets: names and classes, sources (synthetic, CREMA-D), manifests and splits."""
