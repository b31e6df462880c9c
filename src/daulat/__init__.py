"""daulat: where your data lives, under whose law, and how to leave with proof."""

__version__ = "0.1.0"
