"""The original system's way of serving, kept only as the benchmark baseline (not part of the product).

Pre-encoded features in, a pandas DataFrame built per request, sklearn-style ``predict`` then
``predict_proba`` on an ``XGBClassifier``. Run: ``uvicorn benchmarks.baseline_api:app``
with ``BASELINE_MODEL=<bundle>/model.ubj``.
"""

import os

import pandas as pd
from fastapi import FastAPI
from xgboost import XGBClassifier

model = XGBClassifier()
model.load_model(os.environ["BASELINE_MODEL"])
app = FastAPI()


@app.post("/predict")
def predict(features: dict) -> dict:
    frame = pd.DataFrame([features])
    label = int(model.predict(frame)[0])
    probability = float(model.predict_proba(frame)[0, 1])
    return {"prediction": label, "probability": probability}
