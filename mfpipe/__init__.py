"""mfpipe: music-understanding corpora (MF-Skills / MF-Think style) from full-length songs."""

__version__ = "0.1.0"
