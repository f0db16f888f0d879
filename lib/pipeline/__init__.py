"""The pipeline harness: the papermill runner, the run record and page, the step cache, outputs, MLflow run.

May import every other part of lib; only ``run_pipeline.py``, the CLI and the notebooks import it.
"""
