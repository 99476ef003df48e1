"""p2pmoments: share moments with the right small circle of friends, with no server."""

__version__ = "0.1.0"

__all__ = ["__version__"]
