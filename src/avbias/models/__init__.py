"""Encoders and fusion heads."""
