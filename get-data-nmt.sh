#!/usr/bin/env bash
# Monolingual WMT NewsCrawl data and WMT dev/test sets for unsupervised MT, prepared like the original
# XLM's get-data-nmt.sh (same files, same names), on xlm's own tools:
#
#   ./get-data-nmt.sh --src en --tgt fr [--reload_codes CODES --reload_vocab VOCAB]
#                     [--mirror DIR_OR_URL] [--data_path ./data] [--n_mono 5000000] [--codes 60000]
#
# --mirror fetches every archive by its file name from a local folder or an http(s) prefix instead of
# statmt.org (clusters without internet). Each archive is checked before use; every output is written
# under a temporary name and renamed when complete; steps whose outputs exist are skipped.
set -euo pipefail  # (one command a line: set -e lets a failure on the left of && go on)
MAIN=$(cd "$(dirname "$0")" && pwd)
source "$MAIN/tools/data_lib.sh"  # fetch, extract, parse_options, check_count, check_mirror, mirror_has, name_stdin,
# produce, die
N_MONO=5000000
CODES=60000
DATA=./data
SRC= TGT= RELOAD_CODES= RELOAD_VOCAB= MIRROR=
parse_options "src=SRC tgt=TGT reload_codes=RELOAD_CODES reload_vocab=RELOAD_VOCAB mirror=MIRROR data_path=DATA \
  n_mono=N_MONO codes=CODES" "$@"
[ ${#ARGS[@]} -eq 0 ] || die "unknown argument ${ARGS[0]}"
check_count --n_mono "$N_MONO"
check_count --codes "$CODES"
N_MONO=$((10#$N_MONO)) CODES=$((10#$CODES))
check_mirror
[ -n "$SRC" ] || die "--src not provided"
[ -n "$TGT" ] || die "--tgt not provided"
case "$SRC-$TGT" in en-fr|de-en|en-ro) ;; *) die "supported pairs: --src en --tgt fr, --src de --tgt en, --src en --tgt ro";; esac
[ -z "$RELOAD_CODES" ] || [ -f "$RELOAD_CODES" ] || die "cannot locate BPE codes $RELOAD_CODES"
[ -z "$RELOAD_VOCAB" ] || [ -f "$RELOAD_VOCAB" ] || die "cannot locate vocabulary $RELOAD_VOCAB"
if { [ -n "$RELOAD_CODES" ] && [ -z "$RELOAD_VOCAB" ]; } || { [ -z "$RELOAD_CODES" ] && [ -n "$RELOAD_VOCAB" ]; }; then
  die "BPE codes should be provided if and only if the vocabulary is also provided"
fi

MONO=$DATA/mono PARA=$DATA/para PROC=$DATA/processed/$SRC-$TGT
BPE_CODES=$PROC/codes FULL_VOCAB=$PROC/vocab.$SRC-$TGT
if [ -n "$RELOAD_CODES" ]; then
  # read before hours of tokenization; and an earlier run's copies stay (as every output that exists), so other
  # files given now would not be used
  check_codes_vocab --reload_codes "$RELOAD_CODES" --reload_vocab "$RELOAD_VOCAB"
  same_as_copy() {  # flag, file given, its copy
    [ ! -f "$3" ] || cmp -s "$2" "$3" ||
      die "$1 $2 differs from $3, which an earlier run copied or made, and the files beside it were made with: remove $PROC to start over"
  }
  same_as_copy --reload_codes "$RELOAD_CODES" "$BPE_CODES"
  same_as_copy --reload_vocab "$RELOAD_VOCAB" "$FULL_VOCAB"
fi
mkdir -p "$MONO/$SRC" "$MONO/$TGT" "$PARA" "$PROC"
PY="python"

tokenize() {  # language: stdin -> stdout, the original's Moses pipeline (+ Romanian normalisation)
  if [ "$1" = ro ]; then
    # Sennrich's WMT16 Romanian preprocessing: comma-below letters and no diacritics
    $PY -c 'import sys
t = str.maketrans("ŞşŢţȘșȚțĂăÂâÎî", "SsTtSsTtAaAaIi")
for line in sys.stdin: sys.stdout.write(line.translate(t))' | bash "$MAIN/tools/tokenize.sh" ro
  else
    bash "$MAIN/tools/tokenize.sh" "$1"
  fi
}

declare -A NEWS=(
  [en]="http://www.statmt.org/wmt14/training-monolingual-news-crawl/news.2007.en.shuffled.gz http://www.statmt.org/wmt14/training-monolingual-news-crawl/news.2008.en.shuffled.gz"
  [de]="http://www.statmt.org/wmt14/training-monolingual-news-crawl/news.2007.de.shuffled.gz http://www.statmt.org/wmt14/training-monolingual-news-crawl/news.2008.de.shuffled.gz"
  [fr]="http://www.statmt.org/wmt14/training-monolingual-news-crawl/news.2007.fr.shuffled.gz http://www.statmt.org/wmt14/training-monolingual-news-crawl/news.2008.fr.shuffled.gz http://www.statmt.org/wmt14/training-monolingual-news-crawl/news.2009.fr.shuffled.gz"
  [ro]="http://data.statmt.org/wmt16/translation-task/news.2015.ro.shuffled.gz"
)

needed=()  # the archives this run will fetch
for lg in $SRC $TGT; do
  [ -f "$MONO/$lg/all.$lg" ] || for url in ${NEWS[$lg]}; do [ -f "$MONO/$lg/$(basename "$url")" ] || needed+=("$(basename "$url")"); done
done
[ -f "$PARA/dev.tgz" ] || needed+=(dev.tgz)
mirror_has "${needed[@]}"

for lg in $SRC $TGT; do
  raw=$MONO/$lg/all.$lg
  if [ ! -f "$raw" ]; then
    for url in ${NEWS[$lg]}; do fetch "$url" "$MONO/$lg"; done
    echo "Concatenating $lg monolingual data ($N_MONO sentences at most)..."
    # each archive's last line ends with a newline (not joined to the next one's first); head stops the
    # decompression early (SIGPIPE, status 141), which is no error, while head's own failure (disk full) is
    status=0
    ( for url in ${NEWS[$lg]}; do
        gzip -dc "$MONO/$lg/$(basename "$url")" | LC_ALL=C sed -e '$a\' || exit
      done ) | head -n "$N_MONO" > "$raw.tmp" || status=("${PIPESTATUS[@]}")
    if [ "${status[*]}" != 0 ] && [ "${status[*]}" != "141 0" ]; then
      rm -f "$raw.tmp"
      die "$MONO/$lg: cannot concatenate the news archives (status ${status[*]})"
    fi
    [ -s "$raw.tmp" ] || { rm -f "$raw.tmp"; die "$MONO/$lg: the news archives hold no text"; }
    mv "$raw.tmp" "$raw"
  fi
  if [ ! -f "$raw.tok" ]; then
    echo "Tokenizing $lg monolingual data..."
    produce "$raw.tok" name_stdin "$raw" tokenize "$lg"
  fi
done

if [ ! -f "$BPE_CODES" ] && [ -n "$RELOAD_CODES" ]; then cp "$RELOAD_CODES" "$BPE_CODES"; fi
if [ ! -f "$BPE_CODES" ]; then
  echo "Learning $CODES BPE codes..."
  produce "$BPE_CODES" $PY "$MAIN/tools/fastbpe" learnbpe "$CODES" "$MONO/$SRC/all.$SRC.tok" "$MONO/$TGT/all.$TGT.tok"
fi
for lg in $SRC $TGT; do
  [ -f "$PROC/train.$lg" ] || $PY "$MAIN/tools/fastbpe" applybpe "$PROC/train.$lg" "$MONO/$lg/all.$lg.tok" "$BPE_CODES"
  if [ ! -f "$PROC/vocab.$lg" ]; then
    produce "$PROC/vocab.$lg" $PY "$MAIN/tools/fastbpe" getvocab "$PROC/train.$lg"
  fi
done
if [ ! -f "$FULL_VOCAB" ] && [ -n "$RELOAD_VOCAB" ]; then cp "$RELOAD_VOCAB" "$FULL_VOCAB"; fi
if [ ! -f "$FULL_VOCAB" ]; then
  produce "$FULL_VOCAB" $PY "$MAIN/tools/fastbpe" getvocab "$PROC/train.$SRC" "$PROC/train.$TGT"
fi
for lg in $SRC $TGT; do
  [ -f "$PROC/train.$lg.pth" ] || $PY "$MAIN/preprocess.py" "$FULL_VOCAB" "$PROC/train.$lg"
done

# WMT dev/test sets (evaluation only), from the sgm files of WMT18's dev.tgz
case "$SRC-$TGT" in
  en-fr) VALID=(newstest2013-ref.en newstest2013-ref.fr) TEST=(newstest2014-fren-ref.en newstest2014-fren-ref.fr);;
  de-en) VALID=(newstest2013-ref.de newstest2013-ref.en) TEST=(newstest2016-ende-ref.de newstest2016-deen-ref.en);;
  en-ro) VALID=(newsdev2016-roen-ref.en newsdev2016-enro-ref.ro) TEST=(newstest2016-roen-ref.en newstest2016-enro-ref.ro);;
esac
fetch http://data.statmt.org/wmt18/translation-task/dev.tgz "$PARA"
extract "$PARA/dev.tgz" "$PARA" dev
for split in valid test; do
  if [ $split = valid ]; then files=("${VALID[@]}"); else files=("${TEST[@]}"); fi
  for i in 0 1; do
    lg=$([ $i = 0 ] && echo "$SRC" || echo "$TGT")
    sgm=$PARA/dev/${files[$i]}.sgm
    [ -f "$sgm" ] || die "$sgm is not found in dev.tgz"
    out=$PROC/$split.$SRC-$TGT.$lg
    if [ ! -f "$out.pth" ]; then
      # the text of each <seg> element, as Moses' input-from-sgm.perl extracts it (an empty one too: the
      # two sides stay aligned)
      $PY "$MAIN/tools/input_from_sgm.py" < "$sgm" | tokenize "$lg" > "$PARA/dev/${files[$i]}.tok"
      $PY "$MAIN/tools/fastbpe" applybpe "$out" "$PARA/dev/${files[$i]}.tok" "$BPE_CODES" "$PROC/vocab.$lg"
      $PY "$MAIN/preprocess.py" "$FULL_VOCAB" "$out"
    fi
    ln -sf "$(basename "$out").pth" "$PROC/$split.$lg.pth"
  done
done

echo "===== Data summary ($PROC)"
python "$MAIN/tools/corpus_summary.py" "$PROC"
