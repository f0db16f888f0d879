"""Helpers for the notebook-first fraud-detection pipeline (see README.md)."""

__version__ = "0.1.0"
