#!/usr/bin/env bash
# BPE and binarize the XNLI files written by get-data-xnli.sh for glue-xnli.py, like the original XLM's
# prepare-xnli.sh (same files, same names):
#
#   ./prepare-xnli.sh [--codes codes_xnli_15] [--vocab vocab_xnli_15] [--input data/xnli/XNLI-1.0]
#                     [--output data/processed/XLM15/eval/XNLI] [--langs ar,bg,...,zh]
#
# For the en train split, the train split of every other language that has one (get-data-xnli.sh
# --train_langs: XNLI-MT's translations, xlm) and the valid/test splits of every language, reads INPUT/<lg>.<split>
# ('premise<TAB>hypo<TAB>label' lines, after an optional 'premise<TAB>hypo<TAB>label' header line) and writes
# into OUTPUT: <split>.s1.<lg> and <split>.s2.<lg> (BPE'd with --codes) with their binarized <split>.s1.<lg>.pth
# and <split>.s2.<lg>.pth (--vocab), and <split>.label.<lg>. Then run
#   python glue-xnli.py --transfer_tasks XNLI --data_path data/processed/XLM15 ...
#
# The original drops the first line of every file (sed '1d'), the header its get-data-xnli.sh writes; here
# only a line equal to that header is dropped, so a file without it loses no example. The released codes and vocabulary are
# https://dl.fbaipublicfiles.com/XLM/codes_xnli_15 and https://dl.fbaipublicfiles.com/XLM/vocab_xnli_15.
# The original's BPE and binarization of the Wikipedia/parallel pretraining data is not done here.
# All inputs are checked before anything is written; every output is written under a temporary name and
# renamed when complete; outputs that exist are skipped.
set -euo pipefail
MAIN=$(cd "$(dirname "$0")" && pwd)
source "$MAIN/tools/data_lib.sh"  # die, prepare_options, put_in_place, scratch_folder, XNLI_LANGS
CODES=codes_xnli_15 VOCAB=vocab_xnli_15
INPUT=data/xnli/XNLI-1.0 OUTPUT=data/processed/XLM15/eval/XNLI ITEMS=$XNLI_LANGS
prepare_options langs "$@"
LANGS=$ITEMS
PAIRS=()  # "split lg": train for en, as in the original, and for the languages whose translation was prepared
for lg in $LANGS; do
  [[ " $XNLI_LANGS " == *" $lg "* ]] || die "--langs: '$lg' is not an XNLI language ($XNLI_LANGS)"
  for split in train valid test; do
    [ $split = train ] && [ "$lg" != en ] && [ ! -f "$INPUT/$lg.train" ] && continue
    [ -f "$INPUT/$lg.$split" ] || die "$INPUT/$lg.$split not found (run get-data-xnli.sh, or choose languages with --langs)"
    PAIRS+=("$split $lg")
  done
done

scratch_folder "$OUTPUT"

# every file is read and split into sentences and labels before anything is written; then the labels are
# put in place, and the sentence files BPE'd and binarized, two at a time
SOURCES=() OUTPUTS=()
for pair in "${PAIRS[@]}"; do
  read -r split lg <<< "$pair"
  in=$INPUT/$lg.$split out=$OUTPUT/$split tmp=$TMP/$split.$lg
  if [ -f "$out.label.$lg" ] && [ -f "$out.s1.$lg.pth" ] && [ -f "$out.s2.$lg.pth" ]; then
    echo "$out.{s1,s2,label}.$lg exist, skipped"
    continue
  fi
  echo "Preparing $in..."
  mkdir "$tmp"
  awk -F'\t' -v src="$in" -v dir="$tmp" '
    NR == 1 && $0 == "premise\thypo\tlabel" { next }
    NF != 3 || $3 !~ /^(contradiction|neutral|entailment)$/ {
      printf "error: prepare-xnli.sh: %s:%d: not premise<TAB>hypo<TAB>label with label contradiction, neutral or entailment\n", src, NR > "/dev/stderr"
      exit 1
    }
    { print $1 > (dir "/s1"); print $2 > (dir "/s2"); print $3 > (dir "/label") }' "$in"
  [ -f "$tmp/label" ] || die "$in: no examples"
  SOURCES+=("$tmp/label" "$tmp/s1" "$tmp/s2") OUTPUTS+=("$out.label.$lg" "$out.s1.$lg" "$out.s2.$lg")
done
put_in_place
echo "XNLI data ready in $OUTPUT"
