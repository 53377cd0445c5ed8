#!/usr/bin/env bash
# BPE and binarize the GLUE files written by get-data-glue.sh for glue-xnli.py, like the original XLM's
# prepare-glue.sh:
#
#   ./prepare-glue.sh [--codes codes_en] [--vocab vocab_en] [--input data/glue] [--output data/processed/XLM_en/eval]
#                     [--tasks MNLI-m,MNLI-mm,QQP,QNLI,SST-2,CoLA,MRPC,RTE,STS-B,WNLI]
#
# For each task and split, reads INPUT/<TASK>/<split>.xlm.tsv (split train, dev, test) and writes into
# OUTPUT/<TASK>: <s>.s1 (and <s>.s2 for the pair tasks, all but SST-2 and CoLA), BPE'd with --codes, their
# binarized <s>.s1.pth / <s>.s2.pth (--vocab), and <s>.label where the file has labels, with <s> = train,
# valid (from dev) or test: the names glue-xnli.py reads (the original wrote dev.*, which its glue.py does
# not read). Then run
#   python glue-xnli.py --transfer_tasks MNLI-m,QNLI,SST-2 --data_path data/processed/XLM_en ...
#
# The released codes and vocabulary of the English model are https://dl.fbaipublicfiles.com/XLM/codes_en and
# https://dl.fbaipublicfiles.com/XLM/vocab_en. All inputs are checked before anything is written; every
# output is written under a temporary name and renamed when complete; outputs that exist are skipped.
set -euo pipefail
MAIN=$(cd "$(dirname "$0")" && pwd)
source "$MAIN/tools/data_lib.sh"  # die, prepare_options, put_in_place, scratch_folder
GLUE_TASKS="MNLI-m MNLI-mm QQP QNLI SST-2 CoLA MRPC RTE STS-B WNLI"
CODES=codes_en VOCAB=vocab_en
INPUT=data/glue OUTPUT=data/processed/XLM_en/eval ITEMS=$GLUE_TASKS
prepare_options tasks "$@"
TASKS=$ITEMS
for task in $TASKS; do
  [[ " $GLUE_TASKS " == *" $task "* ]] || die "--tasks: '$task' is not a GLUE task ($GLUE_TASKS)"
  for split in train dev test; do
    [ -f "$INPUT/$task/$split.xlm.tsv" ] ||
      die "$INPUT/$task/$split.xlm.tsv not found (run get-data-glue.sh, or choose tasks with --tasks)"
  done
done

scratch_folder "$OUTPUT"

# every file is read and split into sentences and labels before anything is written; then the labels are
# put in place, and the sentence files BPE'd and binarized, two at a time
SOURCES=() OUTPUTS=()
for task in $TASKS; do
  case $task in SST-2|CoLA) n_sent=1;; *) n_sent=2;; esac
  for split in train dev test; do
    in=$INPUT/$task/$split.xlm.tsv out=$OUTPUT/$task/$([ $split = dev ] && echo valid || echo $split)
    tmp=$TMP/$task.$split sents=(s1)
    [ $n_sent = 1 ] || sents+=(s2)
    if [ -f "$out.s1.pth" ] && [ -f "$out.${sents[-1]}.pth" ]; then echo "$out.* exist, skipped"; continue; fi
    echo "Preparing $in..."
    mkdir "$tmp"
    # every line: the sentence(s), then the label if the file has labels (all lines alike)
    awk -F'\t' -v src="$in" -v n="$n_sent" -v dir="$tmp" '
      FNR == 1 { cols = NF }
      NF != cols || (NF != n && NF != n + 1) {
        printf "error: prepare-glue.sh: %s:%d: expected %d or %d tab-separated columns, like every line of the file\n", src, FNR, n, n + 1 > "/dev/stderr"
        exit 1
      }
      { print $1 > (dir "/s1"); if (n == 2) print $2 > (dir "/s2"); if (NF > n) print $NF > (dir "/label") }' "$in"
    [ -f "$tmp/s1" ] || die "$in: no examples"
    [ -f "$tmp/label" ] && SOURCES+=("$tmp/label") OUTPUTS+=("$out.label")
    for s in "${sents[@]}"; do SOURCES+=("$tmp/$s") OUTPUTS+=("$out.$s"); done
  done
done
put_in_place
echo "GLUE data ready in $OUTPUT"
