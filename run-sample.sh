#!/usr/bin/env bash
# The main job on the bundled sample data (data/sample): tokenize, learn and apply BPE, build the
# vocabulary, binarize, and summarise the corpora, with the original XLM's file names, into
# data/processed/sample/ (override with OUT=...). Steps whose outputs exist are skipped.
set -euo pipefail
cd "$(dirname "$0")"
SRC=data/sample
OUT=${OUT:-data/processed/sample}
N_CODES=${N_CODES:-8000}
LANGS="en fr de"
PAIRS="de-en en-fr"
mkdir -p "$OUT/tok"

tokenize() {  # raw file, language, tokenized output
  [ -s "$3" ] || { echo "tokenize $1"; bash tools/tokenize.sh "$2" < "$1" > "$3.tmp" && mv "$3.tmp" "$3"; }
}
for split in train valid test; do
  for lg in $LANGS; do tokenize "$SRC/mono/$split.$lg" "$lg" "$OUT/tok/$split.$lg"; done
  for pair in $PAIRS; do
    for lg in ${pair//-/ }; do tokenize "$SRC/para/$split.$pair.$lg" "$lg" "$OUT/tok/$split.$pair.$lg"; done
  done
done

# joint BPE codes and vocabulary over the monolingual training text of every language
[ -s "$OUT/codes" ] || { echo "learn $N_CODES BPE codes"; python tools/fastbpe learnbpe "$N_CODES" $(for lg in $LANGS; do echo "$OUT/tok/train.$lg"; done) > "$OUT/codes.tmp" && mv "$OUT/codes.tmp" "$OUT/codes"; }
for f in "$OUT"/tok/*; do
  name=$(basename "$f")
  [ -s "$OUT/$name" ] || python tools/fastbpe applybpe "$OUT/$name" "$f" "$OUT/codes"
done
[ -s "$OUT/vocab" ] || { python tools/fastbpe getvocab $(for lg in $LANGS; do echo "$OUT/train.$lg"; done) > "$OUT/vocab.tmp" && mv "$OUT/vocab.tmp" "$OUT/vocab"; }

for f in "$OUT"/tok/*; do
  name=$(basename "$f")
  [ -s "$OUT/$name.pth" ] || python preprocess.py "$OUT/vocab" "$OUT/$name" > /dev/null 2>&1 || python preprocess.py "$OUT/vocab" "$OUT/$name"
done
python tools/corpus_summary.py "$OUT"
