"""dl: deep learning from the command line. This module holds only the version: it imports nothing heavy."""

__version__ = "0.1.0"
