"""democratic-ai: the edge AI hub daemon."""

__version__ = "0.1.0"
