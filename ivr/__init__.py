"""Call controller for Fujian's 12345 government-service hotline."""

__version__ = "0.1.0"
