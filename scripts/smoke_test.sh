#!/usr/bin/env bash
# Smoke test of a deployed scoring API: health, then one prediction. Usage: smoke_test.sh BASE_URL API_KEY
set -euo pipefail
base="${1%/}"
key="$2"
curl -fsS "$base/healthz" | grep -q '"ok"'
body='{"transaction_id": "smoke-1", "step": 1, "type": "TRANSFER", "amount": 181.0, "nameOrig": "C1305486145",
  "oldbalanceOrg": 181.0, "newbalanceOrig": 0.0, "nameDest": "C553264065", "oldbalanceDest": 0.0, "newbalanceDest": 0.0}'
answer="$(curl -fsS -H "X-API-Key: $key" -H 'Content-Type: application/json' -d "$body" "$base/v1/predict")"
echo "$answer" | grep -q '"fraud_probability"'
echo "smoke test passed: $answer"
