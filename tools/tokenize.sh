#!/usr/bin/env bash
# Usage: tools/tokenize.sh LANG < raw.txt > tokenized.txt
# Same pipeline as the original XLM tools/tokenize.sh (Moses normalization and tokenization without
# escaping; word segmenters for zh/th/ja), running on sacremoses with all cores.
# LANG is lower-cased (EN tokenizes as en). A language Moses has no nonbreaking prefixes for (xx, but also
# ar, bg, tr...) gets one warning on stderr, then Moses's generic rules and English prefixes, as its
# tokenizer.perl does.
set -euo pipefail
if [ $# -ne 1 ]; then echo "usage: $0 LANG < input > output" >&2; exit 2; fi
# Python itself would refuse a folder on its standard input, with a fatal error of several lines
if [ -d /dev/stdin ]; then echo "error: standard input is a folder, expected text" >&2; exit 1; fi
exec python -m xlm.data.tokenize "$1"
