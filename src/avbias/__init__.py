"""avbias: audio-visual modality imbalance at the decision layer, from media files to report."""

__version__ = "0.1.0"
