#!/usr/bin/env bash
# TorchServe's frontend is Java: it needs Java 17 or newer on PATH (or under JAVA_HOME).
set -euo pipefail
java_bin=java
[ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ] && java_bin="$JAVA_HOME/bin/java"
if ! command -v "$java_bin" >/dev/null 2>&1; then
  cat >&2 <<'MSG'
ERROR: Java was not found, and TorchServe needs Java 17 or newer.
  Debian/Ubuntu:  sudo apt-get install -y openjdk-17-jre-headless
  RHEL/Fedora:    sudo dnf install -y java-17-openjdk-headless
  macOS:          brew install openjdk@17
  Or point JAVA_HOME at a JDK/JRE 17+ and run the command again.
MSG
  exit 1
fi
version=$("$java_bin" -version 2>&1 | sed -nE '1s/.*version "([0-9]+)(\.[0-9]+)*.*".*/\1/p')
if [ -z "$version" ] || [ "$version" -lt 17 ]; then
  echo "ERROR: TorchServe needs Java 17 or newer; found: $("$java_bin" -version 2>&1 | head -1)." >&2
  echo "  Install openjdk-17-jre-headless (or newer) and put it first on PATH, or set JAVA_HOME." >&2
  exit 1
fi
echo "Java $version found: OK for TorchServe."
