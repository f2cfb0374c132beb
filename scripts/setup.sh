#!/usr/bin/env bash
# setup.sh - install the Debian packages shruti builds and tests against.
# Idempotent: packages already present are left alone; apt-get runs only when
# something is missing, so a second run costs a dpkg query.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libopenblas-dev
  libavformat-dev libavcodec-dev libavutil-dev libswresample-dev
  libcjson-dev libpcre2-dev zlib1g-dev libsqlite3-dev libcurl4-openssl-dev nettle-dev libmicrohttpd-dev
  ffmpeg python3 curl
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
