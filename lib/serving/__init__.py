"""Serving: the scoring core (bundle + feature spec + booster), the FastAPI twin, metrics, the key check.

Imports the core only, and never Spark, MLflow, TensorFlow, pandas or scikit-learn: this is what the
Lambda package and the API image carry.
"""
