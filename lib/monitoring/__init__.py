"""Monitoring: Evidently drift and quality reports, the Pushgateway push, what the stream produced.

Imports the core, data, serving and stream.
"""
