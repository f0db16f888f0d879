"""Streaming on Kafka: clients and topics, the micro-batch scorer, a local broker for one machine.

Imports the core and serving only, and none of the heavy libraries serving avoids.
"""
