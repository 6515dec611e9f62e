"""qhook: self-hosted quality-results workflow and webhook engine."""

__version__ = "0.1.0"
