"""The ops room: what starts local services and builds artifacts on a developer's machine (Kafka, Spark,
Prometheus, the Lambda package). It imports only the core; nothing on the scoring path imports it, and
neither the Lambda zip nor the API image carries it (``tests/code/test_boundaries.py``)."""
