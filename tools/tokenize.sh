#!/usr/bin/env bash
# Usage: tools/tokenize.sh LANG < raw.txt > tokenized.txt
# Same pipeline as the original XLM tools/tokenize.sh (Moses normalization and tokenization without
# escaping; word segmenters for zh/th/ja), running on sacremoses with all cores.
set -euo pipefail
if [ $# -ne 1 ]; then echo "usage: $0 LANG < input > output" >&2; exit 2; fi
exec python -m xlm.data.tokenize "$1"
