#!/usr/bin/env bash
# XNLI 1.0 (dev/test in 15 languages) and the English MultiNLI train set of XNLI-MT 1.0, prepared like the
# original XLM's get-data-xnli.sh (same files, same content) on xlm's own tools:
#
#   ./get-data-xnli.sh [--mirror DIR_OR_URL] [--data_path ./data] [--langs ar,bg,...,zh] [--train_langs en]
#
# Downloads XNLI-1.0.zip and XNLI-MT-1.0.zip into DATA/xnli/ and writes into DATA/xnli/XNLI-1.0/:
#   en.train             MultiNLI train: premise, hypothesis lower-cased and accent-stripped (not re-tokenized),
#                        label 'contradictory' renamed 'contradiction'
#   <lg>.valid <lg>.test the rows of xnli.dev.tsv / xnli.test.tsv for <lg>: premise (column 7) and hypothesis
#                        (column 8) through tools/tokenize.sh <lg> and tools/lowercase_and_remove_accent.py,
#                        label (column 2)
#   <lg>.train           (xlm) for each other language of --train_langs: XNLI-MT's machine translation of the
#                        MultiNLI train set into <lg>, through <lg>'s tokenizer and lower-casing as its valid and
#                        test sets, 'contradictory' renamed: the paper's translate-train setting, fine-tuned with
#                        glue-xnli.py --xnli_train_lang <lg>
# Each file is 'premise<TAB>hypo<TAB>label' lines after a 'premise<TAB>hypo<TAB>label' header line, exactly
# like the original's; prepare-xnli.sh then BPEs and binarizes them.
#
# --mirror fetches both archives by their file names from a local folder or an http(s) prefix instead of
# dl.fbaipublicfiles.com (clusters without internet). --langs restricts the valid/test languages (zh and th
# need the optional word segmenters: pip install 'xlm[zh]' / 'xlm[th]'). Each archive is checked before use;
# every output is written under a temporary name and renamed when complete; outputs that exist are skipped.
set -euo pipefail
MAIN=$(cd "$(dirname "$0")" && pwd)
source "$MAIN/tools/data_lib.sh"  # fetch, extract, tokenize_lower, parse_options, check_mirror, check_segmenter, die, scratch_folder, XNLI_LANGS
URL=https://dl.fbaipublicfiles.com/XNLI
DATA=./data MIRROR='' LANGS=$XNLI_LANGS TRAIN_LANGS=en
parse_options "mirror=MIRROR data_path=DATA langs=LANGS train_langs=TRAIN_LANGS" "$@"
[ ${#ARGS[@]} -eq 0 ] || die "unknown argument ${ARGS[0]}"
LANGS=${LANGS//,/ } TRAIN_LANGS=${TRAIN_LANGS//,/ }
check_mirror
for lg in $TRAIN_LANGS; do
  [[ " $XNLI_LANGS " == *" $lg "* ]] || die "--train_langs: '$lg' is not an XNLI language ($XNLI_LANGS)"
done
for lg in $(echo $LANGS $TRAIN_LANGS | tr ' ' '\n' | sort -u); do
  [[ " $XNLI_LANGS " == *" $lg "* ]] || die "--langs: '$lg' is not an XNLI language ($XNLI_LANGS)"
  check_segmenter "$lg" "install it or leave $lg out with --langs and --train_langs"
done
[ -n "$LANGS" ] || die "--langs: no language given"

XNLI=$DATA/xnli OUT=$DATA/xnli/XNLI-1.0
mkdir -p "$XNLI"
# fetch and check both archives before unpacking either
for name in XNLI-MT-1.0 XNLI-1.0; do
  [ -d "$XNLI/$name" ] || fetch "$URL/$name.zip" "$XNLI"
done
for name in XNLI-MT-1.0 XNLI-1.0; do
  if [ ! -d "$XNLI/$name" ]; then
    extract "$XNLI/$name.zip" "$XNLI" "$name"
    rm "$XNLI/$name.zip"
  fi
done
train_tsv() { echo "$XNLI/XNLI-MT-1.0/multinli/multinli.train.$1.tsv"; }
for f in $(for lg in $TRAIN_LANGS; do train_tsv $lg; done) "$OUT/xnli.dev.tsv" "$OUT/xnli.test.tsv"; do
  [ -f "$f" ] || die "$f not found (remove $(dirname "$f") to unpack its archive again)"
done

scratch_folder "$OUT"
HEADER=$'premise\thypo\tlabel'

write_split() {  # output file, premises, hypotheses, labels: header + pasted columns, renamed when complete
  { echo "$HEADER"; paste "$2" "$3" "$4"; } > "$TMP/out"
  mv "$TMP/out" "$1"
  echo "Wrote $1 ($(wc -l < "$4") examples)"
}

for lg in $TRAIN_LANGS; do
  out=$OUT/$lg.train tsv=$(train_tsv $lg)
  if [ -f "$out" ]; then echo "$out exists, skipped"; continue; fi
  echo "Preparing the $lg train set..."
  # a CR before the newline (a file saved with CRLF line ends) is never content
  tail -n +2 "$tsv" | awk -F'\t' -v src="$tsv" -v dir="$TMP" '
    { sub(/\r$/, "") }
    NF < 3 { printf "error: get-data-xnli.sh: %s:%d: fewer than 3 tab-separated columns\n", src, NR + 1 > "/dev/stderr"; exit 1 }
    { print $1 > (dir "/p"); print $2 > (dir "/h"); print ($3 == "contradictory" ? "contradiction" : $3) > (dir "/label") }'
  [ -f "$TMP/label" ] || die "$tsv: no examples"
  # English as the original prepares it: lower-cased, not tokenized; a translation as its language's test set
  tokenize_lower "$([ $lg = en ] || echo $lg)" "$TMP/p" "$TMP/h"
  write_split "$out" "$TMP/p" "$TMP/h" "$TMP/label"
  rm "$TMP/p" "$TMP/h" "$TMP/label"
done

for lg in $LANGS; do
  for split in valid test; do
    out=$OUT/$lg.$split
    if [ -f "$out" ]; then echo "$out exists, skipped"; continue; fi
    tsv=$OUT/xnli.$([ $split = valid ] && echo dev || echo test).tsv
    echo "Preparing the $lg $split set..."
    awk -F'\t' -v lg="$lg" -v src="$tsv" -v dir="$TMP" '
      { sub(/\r$/, "") }
      $1 != lg { next }
      NF < 8 { printf "error: get-data-xnli.sh: %s:%d: fewer than 8 tab-separated columns\n", src, NR > "/dev/stderr"; bad = 1; exit 1 }
      { n++; print $2 > (dir "/label"); print $7 > (dir "/p"); print $8 > (dir "/h") }
      END { if (!bad && !n) { printf "error: get-data-xnli.sh: %s: no rows for language %s\n", src, lg > "/dev/stderr"; exit 1 } }' "$tsv"
    tokenize_lower "$lg" "$TMP/p" "$TMP/h"
    write_split "$out" "$TMP/p" "$TMP/h" "$TMP/label"
  done
done
