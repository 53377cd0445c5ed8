#!/usr/bin/env bash
# The GLUE benchmark's English tasks, prepared like the original XLM's get-data-glue.sh on xlm's own tools:
#
#   ./get-data-glue.sh [--mirror DIR_OR_URL] [--data_path ./data] [--tasks MNLI,QQP,QNLI,SST-2,CoLA,MRPC,RTE,STS-B,WNLI]
#
# Downloads each task's archive in the GLUE benchmark's layout (<TASK>.zip from dl.fbaipublicfiles.com/glue/data,
# QNLIv2.zip, QQP-clean.zip; MRPC as msr_paraphrase_{train,test}.txt + mrpc_dev_ids.tsv) into DATA/glue/ and writes
# DATA/glue/<TASK>/{train,dev,test}.xlm.tsv: 'sentence1[<TAB>sentence2][<TAB>label]', no header, sentences
# through tools/tokenize.sh en and tools/lowercase_and_remove_accent.py (SST-2, already tokenized and
# lower-cased, gets the Moses punctuation normalisation only, as in the original). Labels are the gold label
# column (MNLI: gold_label, where the original took label2 for dev); test sets have none, except MRPC, whose
# test labels the original's glue.py reads. MNLI gives MNLI-m (dev_matched, test_matched) and MNLI-mm
# (dev_mismatched, test_mismatched), which share the train set. prepare-glue.sh then BPEs and binarizes them.
#
# --mirror fetches every file by its name from a local folder or an http(s) prefix (clusters without
# internet). Each archive is checked before use; every output is written under a temporary name and renamed
# when complete; outputs that exist are skipped.
set -euo pipefail
MAIN=$(cd "$(dirname "$0")" && pwd)
source "$MAIN/tools/data_lib.sh"  # fetch, extract, tokenize_lower, parse_options, check_mirror, die, scratch_folder
GLUE_TASKS="MNLI QQP QNLI SST-2 CoLA MRPC RTE STS-B WNLI"
URL=https://dl.fbaipublicfiles.com/glue/data
MRPC_URL=https://dl.fbaipublicfiles.com/senteval/senteval_data
DATA=./data MIRROR='' TASKS=$GLUE_TASKS
parse_options "mirror=MIRROR data_path=DATA tasks=TASKS" "$@"
[ ${#ARGS[@]} -eq 0 ] || die "unknown argument ${ARGS[0]}"
TASKS=${TASKS//,/ }
check_mirror
[ -n "$TASKS" ] || die "--tasks: no task given"
for task in $TASKS; do
  [[ " $GLUE_TASKS " == *" $task "* ]] || die "--tasks: '$task' is not a GLUE task ($GLUE_TASKS)"
done

GLUE=$DATA/glue
scratch_folder "$GLUE"

normalize() {  # stdin -> stdout: the original's SST-2 steps, replace-unicode-punctuation.perl |
  # normalize-punctuation.perl -l en | remove-non-printing-char.perl, as xlm's tokenizer does them
  python -c 'import sys
from xlm.data.tokenize import PerlPunctNormalizer
norm = PerlPunctNormalizer("en")
for line in sys.stdin: print(norm.normalize(line.rstrip("\n")))'
}

columns() {  # n, file, its source (named in the message): every line has N tab-separated columns or more (fetch's
  # check of MRPC's plain files, which are used as they come)
  awk -F'\t' -v n="$1" -v src="$3" '{ sub(/\r$/, "") }
    NF < n { printf "error: get-data-glue.sh: %s:%d: fewer than %d tab-separated columns\n", src, FNR, n > "/dev/stderr"; exit 1 }' "$2"
}

# Each spec "OUT|SRC|SKIP|C1|C2|CL" is one output file OUT from the columns of the tab-separated SRC after its
# first SKIP lines: sentence1 column C1, sentence2 column C2 (0: none), label column CL (0: none, -1: the last
# one). The sentences of all the specs go through one tokenizer process.
write_splits() {  # spec...
  local spec out src skip c1 c2 cl f k=0 outs=() texts=()
  rm -f "$TMP"/*.{s1,s2,label}
  for spec in "$@"; do
    IFS='|' read -r out src skip c1 c2 cl <<< "$spec"
    if [ -f "$out" ]; then echo "$out exists, skipped"; continue; fi
    [ -f "$src" ] || die "$src not found (remove $(dirname "$src") to unpack its archive again)"
    echo "Preparing $out..."
    k=$((k + 1))
    awk -F'\t' -v src="$src" -v fetched="$([[ "$src" == "$TMP"/* ]] || dirname "$src")" -v skip="$skip" -v c1="$c1" -v c2="$c2" -v cl="$cl" -v base="$TMP/$k" '
      BEGIN { need = c1 > c2 ? c1 : c2; if (cl > need) need = cl }
      FNR <= skip { next }
      { sub(/\r$/, "") }
      NF < need {
        printf "error: get-data-glue.sh: %s:%d: fewer than %d tab-separated columns%s\n", src, FNR, need,
          fetched == "" ? "" : " (remove " fetched " to fetch it again)" > "/dev/stderr"
        exit 1
      }
      { print $c1 > (base ".s1"); if (c2) print $c2 > (base ".s2"); if (cl) print (cl < 0 ? $NF : $cl) > (base ".label") }' "$src"
    [ -f "$TMP/$k.s1" ] || die "$src: no examples"
    outs+=("$out")
    texts+=("$TMP/$k.s1")
    [ "$c2" = 0 ] || texts+=("$TMP/$k.s2")
  done
  [ $k -gt 0 ] || return 0
  if [[ ${outs[0]} == */SST-2/* ]]; then
    for f in "${texts[@]}"; do normalize < "$f" > "$f.norm"; mv "$f.norm" "$f"; done
  else
    tokenize_lower en "${texts[@]}"
  fi
  local i cols
  for i in "${!outs[@]}"; do
    cols=()
    for f in "$TMP/$((i + 1))".{s1,s2,label}; do
      if [ -f "$f" ]; then cols+=("$f"); fi
    done
    paste "${cols[@]}" > "$TMP/out"
    mv "$TMP/out" "${outs[$i]}"
  done
}

get_zip() {  # archive name, folder inside: fetch, check and unpack into DATA/glue unless already there
  if [ ! -d "$GLUE/$2" ]; then
    fetch "$URL/$1" "$GLUE"
    extract "$GLUE/$1" "$GLUE" "$2"
    rm "$GLUE/$1"
  fi
}

for task in $TASKS; do
  dir=$GLUE/$task
  case $task in
    CoLA)  # train/dev: source, label, original label, sentence (no header); test: index, sentence
      get_zip CoLA.zip CoLA
      write_splits "$dir/train.xlm.tsv|$dir/train.tsv|0|4|0|2" "$dir/dev.xlm.tsv|$dir/dev.tsv|0|4|0|2" \
                   "$dir/test.xlm.tsv|$dir/test.tsv|1|2|0|0";;
    SST-2)  # train/dev: sentence, label; test: index, sentence
      get_zip SST-2.zip SST-2
      write_splits "$dir/train.xlm.tsv|$dir/train.tsv|1|1|0|2" "$dir/dev.xlm.tsv|$dir/dev.tsv|1|1|0|2" \
                   "$dir/test.xlm.tsv|$dir/test.tsv|1|2|0|0";;
    MRPC)  # Quality, #1 ID, #2 ID, #1 String, #2 String; dev = the train pairs listed in mrpc_dev_ids.tsv
      mkdir -p "$dir"
      # each file checked before it takes its name: a bad one is not kept, and its error names it as fetched
      fetch "$MRPC_URL/msr_paraphrase_train.txt" "$dir" "" columns 5
      fetch "$MRPC_URL/msr_paraphrase_test.txt" "$dir" "" columns 5
      fetch "$URL/mrpc_dev_ids.tsv" "$dir" "" columns 2
      for split in train dev; do
        awk -F'\t' -v want="$split" '{ sub(/\r$/, "") }
          NR == FNR { dev[$1 "\t" $2] = 1; next }
          FNR > 1 && ((($2 "\t" $3) in dev) == (want == "dev"))' \
          "$dir/mrpc_dev_ids.tsv" "$dir/msr_paraphrase_train.txt" > "$TMP/mrpc.$split"
      done
      write_splits "$dir/train.xlm.tsv|$TMP/mrpc.train|0|4|5|1" "$dir/dev.xlm.tsv|$TMP/mrpc.dev|0|4|5|1" \
                   "$dir/test.xlm.tsv|$dir/msr_paraphrase_test.txt|1|4|5|1";;
    QQP)  # train/dev: id, qid1, qid2, question1, question2, is_duplicate; test: id, question1, question2
      get_zip QQP-clean.zip QQP
      write_splits "$dir/train.xlm.tsv|$dir/train.tsv|1|4|5|6" "$dir/dev.xlm.tsv|$dir/dev.tsv|1|4|5|6" \
                   "$dir/test.xlm.tsv|$dir/test.tsv|1|2|3|0";;
    STS-B)  # index, genre, filename, year, old_index, source1, source2, sentence1, sentence2, score (not in test)
      get_zip STS-B.zip STS-B
      write_splits "$dir/train.xlm.tsv|$dir/train.tsv|1|8|9|10" "$dir/dev.xlm.tsv|$dir/dev.tsv|1|8|9|10" \
                   "$dir/test.xlm.tsv|$dir/test.tsv|1|8|9|0";;
    QNLI|RTE|WNLI)  # index, question/sentence1, sentence/sentence2, label (not in test)
      get_zip "$([ "$task" = QNLI ] && echo QNLIv2 || echo "$task").zip" "$task"
      write_splits "$dir/train.xlm.tsv|$dir/train.tsv|1|2|3|4" "$dir/dev.xlm.tsv|$dir/dev.tsv|1|2|3|4" \
                   "$dir/test.xlm.tsv|$dir/test.tsv|1|2|3|0";;
    MNLI)  # index, promptID, pairID, genre, 4 parses, sentence1, sentence2, label1[..5], gold_label (not in test)
      get_zip MNLI.zip MNLI
      mkdir -p "$GLUE/MNLI-m" "$GLUE/MNLI-mm"
      write_splits "$GLUE/MNLI-m/train.xlm.tsv|$dir/train.tsv|1|9|10|-1" \
                   "$GLUE/MNLI-m/dev.xlm.tsv|$dir/dev_matched.tsv|1|9|10|-1" \
                   "$GLUE/MNLI-m/test.xlm.tsv|$dir/test_matched.tsv|1|9|10|0" \
                   "$GLUE/MNLI-mm/dev.xlm.tsv|$dir/dev_mismatched.tsv|1|9|10|-1" \
                   "$GLUE/MNLI-mm/test.xlm.tsv|$dir/test_mismatched.tsv|1|9|10|0"
      ln -sfn ../MNLI-m/train.xlm.tsv "$GLUE/MNLI-mm/train.xlm.tsv";;
  esac
done
echo "GLUE data ready in $GLUE"
