#!/usr/bin/env bash
# Parallel training data for one language pair, prepared like the original XLM's get-data-para.sh (same corpora,
# same files, same names, same split) on xlm's own tools:
#
#   ./get-data-para.sh PAIR [--mirror DIR_OR_URL] [--data_path ./data] [--n_valid 5000] [--n_test 5000]
#
# PAIR is one of the original's: ar-en bg-en de-en el-en en-es en-fr en-hi en-ru en-sw en-th en-tr en-ur en-vi
# en-zh. Downloads the original's OPUS corpora (moses format, CORPUS.PAIR.txt.zip) or the IIT Bombay corpus
# (IITB.en-hi.tgz) into DATA/para/ and takes from each archive its two texts, as DATA/para/CORPUS.PAIR.LG. For
# each language LG of the pair, the corpora in the original's order (alphabetical) go through tools/tokenize.sh
# LG and tools/lowercase_and_remove_accent.py into DATA/para/PAIR.LG.all, which the original's seeded shuffle
# (seed 42) splits into PAIR.LG.train (all but the last N_VALID + N_TEST lines of the shuffle), PAIR.LG.valid
# (the next N_VALID) and PAIR.LG.test (the last N_TEST); both languages are shuffled alike, so lines stay aligned.
#
# --mirror fetches every archive by the file name above from a local folder or an http(s) prefix instead of
# OPUS / IIT Bombay (clusters without internet). Each archive is checked before use; every output is written
# under a temporary name and renamed when complete; steps whose outputs exist are skipped. Memory stays bounded
# whatever the corpus size: everything streams, and the split sorts on disk.
set -euo pipefail
MAIN=$(cd "$(dirname "$0")" && pwd)
source "$MAIN/tools/data_lib.sh"  # fetch, join_lines, tokenize_lower, split_data, split_options, die
OPUS=https://object.pouta.csc.fi/OPUS
IITB=http://www.cfilt.iitb.ac.in/iitb_parallel/iitb_corpus_download/parallel.tgz
# the original's corpora (the ones it does not comment out), as OPUS name/version, in alphabetical order
declare -A CORPORA=(
  [ar-en]="MultiUN/v1" [bg-en]="EUbookshop/v2 Europarl/v8" [de-en]="EUbookshop/v2" [el-en]="EUbookshop/v2"
  [en-es]="MultiUN/v1" [en-fr]="MultiUN/v1" [en-hi]="IITB" [en-ru]="MultiUN/v1"
  [en-sw]="GlobalVoices/v2018q4 Tanzil/v1" [en-th]="OpenSubtitles/v2018"
  [en-tr]="SETIMES/v2 TED2013/v1.1 Wikipedia/v1.0" [en-ur]="Tanzil/v1" [en-vi]="OpenSubtitles/v2018"
  [en-zh]="MultiUN/v1"
)
split_options pair "$@"
PAIR=$ARG
[ -n "${CORPORA[$PAIR]:-}" ] || die "unsupported pair $PAIR; supported: $(printf '%s\n' "${!CORPORA[@]}" | sort | xargs)"
LANGS=${PAIR/-/ }
PARA=$DATA/para
mkdir -p "$PARA"

archive_name() {  # corpus: the archive's file name here and in the mirror
  case "$1" in
    IITB) echo "IITB.$PAIR.tgz";;
    *) echo "${1%%/*}.$PAIR.txt.zip";;
  esac
}

unpack() {  # archive, corpus name: the archive's *.PAIR.L1 and *.PAIR.L2 texts as PARA/CORPUS.PAIR.L1 / .L2, which
  # must have as many lines (a last line without a newline counts); an archive that fails is removed, so that the
  # next run fetches it again
  local err
  err=$(python - "$1" "$PARA/$2" "$PAIR" 2>&1 <<'EOF'
import os, sys, tarfile, zipfile
archive, out, pair = sys.argv[1:]
if archive.endswith(".zip"):
    z = zipfile.ZipFile(archive)
    members, open_member = {m.filename: m for m in z.infolist()}, z.open
else:
    t = tarfile.open(archive, "r:gz")
    members, open_member = {m.name: m for m in t.getmembers() if m.isfile()}, t.extractfile
lines = {}
for lg in pair.split("-"):
    suffix = f".{pair}.{lg}"
    found = [name for name in members if name.endswith(suffix)]
    if len(found) != 1:
        sys.exit(f"{archive}: {len(found)} files named *{suffix} inside, expected one")
    n, last = 0, b"\n"
    with open_member(members[found[0]]) as src, open(out + suffix + ".tmp", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
            n, last = n + chunk.count(b"\n"), chunk[-1:]
    lines[found[0]] = n + (last != b"\n")
if len(set(lines.values())) > 1:
    for lg in pair.split("-"):
        os.remove(f"{out}.{pair}.{lg}.tmp")
    sys.exit(f"{archive}: " + " but ".join(f"{name} has {n} lines" for name, n in lines.items()))
for lg in pair.split("-"):
    os.replace(f"{out}.{pair}.{lg}.tmp", f"{out}.{pair}.{lg}")
EOF
  ) || { rm -f "$1"; die "$err (removed: fetched again on the next run)"; }
}

have_all() {  # suffix: true if PARA/PAIR.LG.SUFFIX exists for both languages
  local lg
  for lg in $LANGS; do [ -f "$PARA/$PAIR.$lg.$1" ] || return 1; done
}

if have_all all; then
  echo "$PARA/$PAIR.{${LANGS/ /,}}.all exist, skipped"
else
  for lg in $LANGS; do
    check_segmenter "$lg"
  done
  # fetch and check every archive before unpacking any
  for corpus in ${CORPORA[$PAIR]}; do
    if [ "$corpus" = IITB ]; then url=$IITB; else url=$OPUS-${corpus%%/*}/${corpus#*/}/moses/$PAIR.txt.zip; fi
    fetch "$url" "$PARA" "$(archive_name "$corpus")"
  done
  for corpus in ${CORPORA[$PAIR]}; do
    name=${corpus%%/*}
    [ -f "$PARA/$name.$PAIR.${LANGS% *}" ] && [ -f "$PARA/$name.$PAIR.${LANGS#* }" ] && continue
    echo "Unpacking $PARA/$(archive_name "$corpus")"
    unpack "$PARA/$(archive_name "$corpus")" "$name"
  done
  # both sides are tokenized under temporary names, and renamed together once they have as many lines
  trap 'for lg in $LANGS; do rm -f "$PARA/$PAIR.$lg.all.tmp"; done' EXIT
  for lg in $LANGS; do
    [ -f "$PARA/$PAIR.$lg.all" ] && continue
    echo "Tokenizing, lower-casing the $lg side of $PAIR..."
    files=()
    for corpus in ${CORPORA[$PAIR]}; do files+=("$PARA/${corpus%%/*}.$PAIR.$lg"); done
    join_lines "${files[@]}" > "$PARA/$PAIR.$lg.all.tmp"
    tokenize_lower "$lg" "$PARA/$PAIR.$lg.all.tmp"
  done
  counts=$(for lg in $LANGS; do wc -l < "$PARA/$PAIR.$lg.all$([ -f "$PARA/$PAIR.$lg.all" ] || echo .tmp)"; done)
  if [ "$(echo "$counts" | sort -u | wc -l)" -ne 1 ]; then
    for lg in $LANGS; do rm -f "$PARA/$PAIR.$lg.all.tmp"; done
    die "$PARA/$PAIR.{${LANGS/ /,}}.all: $(echo $counts | sed 's/ / and /') lines, expected as many"
  fi
  for lg in $LANGS; do
    [ -f "$PARA/$PAIR.$lg.all" ] || mv "$PARA/$PAIR.$lg.all.tmp" "$PARA/$PAIR.$lg.all"
  done
fi
counts=$(for lg in $LANGS; do wc -l < "$PARA/$PAIR.$lg.all"; done | sort -u | wc -l)
[ "$counts" -eq 1 ] || die "$PARA/$PAIR.{${LANGS/ /,}}.all do not have the same number of lines (remove them to make them again)"

if have_all train && have_all valid && have_all test; then
  echo "$PARA/$PAIR.{${LANGS/ /,}}.{train,valid,test} exist, skipped"
else
  for lg in $LANGS; do
    split_data "$PARA/$PAIR.$lg.all" "$PARA/$PAIR.$lg.train" "$PARA/$PAIR.$lg.valid" "$PARA/$PAIR.$lg.test" \
      "$N_VALID" "$N_TEST"
  done
fi
echo "Done: $PARA/$PAIR.{${LANGS/ /,}}.{train,valid,test}"
