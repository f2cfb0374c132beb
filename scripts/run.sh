#!/usr/bin/env bash
# run.sh - install dependencies, build shruti (Release) and run it: with no
# arguments the service (`shruti serve`), else the given command, e.g.
#   ./scripts/run.sh transcribe --model base.en audio.mp3
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$ROOT/build" -j "$(nproc)" --target shruti >/dev/null
if [ "$#" -eq 0 ]; then
  set -- serve
fi
exec "$ROOT/build/shruti" "$@"
