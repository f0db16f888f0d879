#!/usr/bin/env bash
# Spark and the embedded Kafka broker need Java 17 or newer.
set -euo pipefail
if ! command -v java >/dev/null 2>&1; then
  cat >&2 <<'MSG'
error: Java was not found. Spark and Kafka need Java 17+.
  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless
  macOS:         brew install openjdk@17
  conda:         conda install -c conda-forge openjdk=17   (environment.yml already does this)
MSG
  exit 1
fi
version=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
if [ -z "$version" ] || [ "$version" -lt 17 ]; then
  echo "error: Java ${version:-?} found at $(command -v java); Spark and Kafka need Java 17+ (see README: Requirements)." >&2
  exit 1
fi
echo "Java $version OK"
