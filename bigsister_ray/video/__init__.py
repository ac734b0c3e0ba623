"""Video: decoding files (decord), live and replayed streams (PyAV), windowing, writing mp4."""
