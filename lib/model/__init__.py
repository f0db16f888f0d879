"""Models: training candidates, evaluation, MLflow records, the registry gate, batch scoring of files.

Imports the core, data and serving (a registered model is exported as a serving bundle).
"""
