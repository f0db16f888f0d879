#!/usr/bin/env bash
# The virtual environment takes ~5.1 GB (TensorFlow alone 1.9 GB) and the tests write ~1 GB more:
# refuse early, with the figures, instead of failing halfway through pip with "No space left on device".
set -euo pipefail
need_gb=${NEED_GB:-7}
for dir in . "${TMPDIR:-/tmp}"; do
  free_kb=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')
  if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    echo "error: $(cd "$dir" && pwd) has $((free_kb / 1024)) MB free; installing and testing this project needs about ${need_gb} GB" \
      "(.venv ~5.1 GB, pip's unpacking in TMPDIR, Spark/Kafka test data). Free some space or set TMPDIR to a larger disk." >&2
    exit 1
  fi
done
echo "disk OK ($(df -Ph . | awk 'NR == 2 {print $4}') free)"
