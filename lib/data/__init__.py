"""Data: simulate, acquire and validate raw transactions, the Spark feature job, processed layout, DVC versions.

Imports the core only (never serving, model, stream, monitoring or pipeline).
"""
