# Shell helpers shared by the get-data-*.sh / prepare-*.sh scripts; source it, do not run it:
#
#   MAIN=...     # the repository root
#   MIRROR=...   # optional: a local folder or an http(s) prefix holding every archive under its file name
#   source "$MAIN/tools/data_lib.sh"
#   fetch URL DIR [NAME [CHECK...]]  # DIR/NAME (default: the file name of URL), downloaded (or copied from
#                                  # $MIRROR/NAME) and checked (CHECK... PART SOURCE too, if given)
#   check_segmenter LANG [HINT]    # for zh, th, ja: an error now (with HINT) if the word segmenter is missing
#   extract ARCHIVE DIR TOP        # unpack ARCHIVE's folder TOP into DIR/TOP, all at once
#   tokenize_lower LANG FILE...    # each FILE in place through tools/tokenize.sh LANG (skipped if LANG is '')
#                                  # and tools/lowercase_and_remove_accent.py
#   tokenize_lower_pipe LANG       # the same, stdin to stdout
#   split_data ALL TRAIN VALID TEST N_VALID N_TEST   # the original's seeded shuffle and split of ALL
#   prepare_options FLAG "$@"      # --codes --vocab --input --output --FLAG of prepare-*.sh, checked
#   check_codes_vocab CODES_FLAG CODES VOCAB_FLAG VOCAB  # both readable as such, else an error naming the flag
#   put_in_place                   # SOURCES[i] to OUTPUTS[i] of prepare-*.sh: labels moved, sentences BPE'd
#                                  # and binarized, two files at a time
#   split_options WHAT "$@"        # one WHAT (into ARG) and --mirror --data_path --n_valid --n_test, checked
#   parse_options "flag=VAR ..." "$@"  # every --flag VALUE into VAR, other arguments into ARGS; an unknown
#                                  # --flag or one without its value is an error naming it
#   check_count FLAG VALUE         # VALUE a positive whole number, else an error naming FLAG
#   check_mirror                   # $MIRROR empty, an existing folder or an http(s):// or file:// URL
#   mirror_has NAME...             # with a folder $MIRROR, each file there, else an error naming the missing
#   join_lines FILE...             # the files one after the other, each last line ending with a newline
#   name_stdin FILE COMMAND...     # COMMAND < FILE, "<stdin>" in its messages replaced by FILE
#   produce OUT COMMAND...         # COMMAND > OUT.tmp, renamed OUT when it succeeds, removed when it fails
#   die MESSAGE                    # "<script name>: MESSAGE" on stderr, exit 1
#
# Every output appears under its final name only when complete, and a step whose output exists is skipped,
# so an interrupted script can simply be run again.

die() { echo "error: $(basename "$0"): $*" >&2; exit 1; }

XNLI_LANGS="ar bg de el en es fr hi ru sw th tr ur vi zh"  # the 15 languages of XNLI

check_segmenter() {  # language[, hint]: fail now rather than after a download if its word segmenter is missing
  local err
  case $1 in
    zh|th|ja) err=$(bash "$MAIN/tools/tokenize.sh" "$1" < /dev/null 2>&1 > /dev/null) || die "${err#error: }${2:+; $2}";;
  esac
}

archive_ok() {  # file, its final name: true if the archive (.zip, .tgz/.tar.gz, .gz or .bz2 by that name) reads to its end
  case "$2" in
    *.bz2) bzip2 -t "$1" 2> /dev/null;;
    *.zip) python -c 'import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() is not None)' "$1" 2> /dev/null;;
    *.tgz|*.tar.gz) tar -tzf "$1" > /dev/null 2>&1;;
    *.gz) gzip -t "$1" 2> /dev/null;;
    *) true;;
  esac
}

fetch() {  # url, destination folder[, file name[, check...]]: download (or copy from $MIRROR) to a .part file,
  # check (the archive, then with CHECK... PART SOURCE if given, which names SOURCE in its message), rename
  local url=$1 name=${3:-$(basename "$1")}
  local dest=$2/$name
  [ -f "$dest" ] && return 0
  local src=$url
  [ -n "${MIRROR:-}" ] && src=${MIRROR%/}/$name
  echo "Fetching $src"
  if [ -d "${MIRROR:-/nonexistent}" ]; then
    [ -f "$src" ] || die "$src: not in the mirror"
    cp "$src" "$dest.part"
  else
    curl -fL --retry 3 -o "$dest.part" "$src" || { rm -f "$dest.part"; die "cannot download $src"; }
  fi
  archive_ok "$dest.part" "$dest" || { rm -f "$dest.part"; die "$src: corrupt archive"; }
  if [ $# -gt 3 ]; then "${@:4}" "$dest.part" "$src" || { rm -f "$dest.part"; exit 1; }; fi
  mv "$dest.part" "$dest"
}

parse_options() {  # "flag=VAR ...", "$@": each --flag VALUE into VAR; the other arguments, in order, into ARGS
  local spec=" $1 " var
  shift
  ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --*=*) die "unknown argument $1 (write ${1%%=*} VALUE)";;
      --?*)
        [[ "$spec" == *" ${1#--}="* ]] || die "unknown argument $1"
        [ $# -ge 2 ] && [[ "$2" != --* ]] || die "$1: missing value"
        var=${spec#*" ${1#--}="}
        printf -v "${var%% *}" '%s' "$2"
        shift 2;;
      -?*) die "unknown argument $1";;
      *) ARGS+=("$1"); shift;;
    esac
  done
}

check_count() {  # flag, value: a positive whole number (not too large for shell arithmetic)
  [[ "$2" =~ ^[0-9]{1,15}$ ]] && [ $((10#$2)) -gt 0 ] || die "$1: expected a positive whole number, got '$2'"
}

check_mirror() {  # $MIRROR: none, an existing folder, or an http(s):// or file:// URL
  [ -z "${MIRROR:-}" ] || [ -d "$MIRROR" ] || [[ "${MIRROR,,}" =~ ^(https?|file):// ]] ||
    die "--mirror: '$MIRROR' is neither an existing folder nor an http(s):// or file:// URL"
}

mirror_has() {  # file names...: with a folder --mirror, every one there, else one error naming those missing,
  # before hours of work on the others
  [ -d "${MIRROR:-/nonexistent}" ] || return 0
  local missing=() name
  for name in "$@"; do [ -f "${MIRROR%/}/$name" ] || missing+=("$name"); done
  [ ${#missing[@]} -eq 0 ] || die "not in the mirror $MIRROR: ${missing[*]}"
}

join_lines() {  # files...: their lines one after the other on stdout, a newline added to a last line without one
  # (a plain cat would join it to the first line of the next file)
  local f
  for f in "$@"; do
    cat "$f"
    [ ! -s "$f" ] || [ "$(tail -c 1 "$f" | od -An -tx1 | tr -d ' \n')" = 0a ] || echo
  done
}

name_stdin() {  # file, command...: COMMAND < FILE, "<stdin>" in what it prints on stderr replaced by FILE, so
  # that an error names the file and its line; the status is COMMAND's
  local file=$1
  shift
  { "$@" < "$file" 2>&1 >&3 3>&- | F=$file awk '{ while ((i = index($0, "<stdin>")) > 0)
      $0 = substr($0, 1, i - 1) ENVIRON["F"] substr($0, i + 7); print; fflush() }' >&2; } 3>&1
}

produce() {  # output, command...: COMMAND's stdout to OUTPUT.tmp, renamed OUTPUT if COMMAND succeeds; if it fails,
  # OUTPUT.tmp is removed and the script exits with its status (its own message said why)
  local out=$1 status=0
  shift
  "$@" > "$out.tmp" || status=$?
  if [ $status -ne 0 ]; then rm -f "$out.tmp"; exit $status; fi
  mv "$out.tmp" "$out"
}

extract() {  # archive, destination folder, folder inside the archive: DIR/TOP appears complete or not at all
  local archive=$1 dir=$2 top=$3
  [ -d "$dir/$top" ] && return 0
  local tmp=$dir/.$top.extract.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  echo "Extracting $archive"
  case "$archive" in
    *.zip) python -m zipfile -e "$archive" "$tmp" 2> /dev/null;;
    *.tgz|*.tar.gz) tar -xzf "$archive" -C "$tmp" 2> /dev/null;;
    *) false;;
  esac || { rm -rf "$tmp"; die "$archive: cannot extract"; }
  [ -d "$tmp/$top" ] || { rm -rf "$tmp"; die "$archive: no folder $top/ inside"; }
  mv "$tmp/$top" "$dir/$top"
  rm -rf "$tmp"
}

tokenize_lower() {  # language ('': lower-case only), files...: each file, in place, through tools/tokenize.sh
  # then tools/lowercase_and_remove_accent.py; all the files go through one process (one start-up, not one per
  # file) and are split back by their line counts
  local lang=$1 counts=() f n total=0 start=1 i=0
  shift
  for f in "$@"; do n=$(wc -l < "$f"); counts+=("$n"); total=$((total + n)); done
  local all
  all=$(mktemp "$1.XXXXXX")
  cat "$@" | tokenize_lower_pipe "$lang" > "$all" || { local status=$?; rm -f "$all"; exit $status; }
  [ "$(wc -l < "$all")" -eq "$total" ] || { rm -f "$all"; die "$1: tokenization changed the number of lines"; }
  for f in "$@"; do
    awk -v a="$start" -v b="$((start + counts[i]))" 'NR >= a && NR < b' "$all" > "$f"
    start=$((start + counts[i])); i=$((i + 1))
  done
  rm -f "$all"
}

tokenize_lower_pipe() {  # language ('': lower-case only): stdin to stdout
  if [ -n "$1" ]; then
    bash "$MAIN/tools/tokenize.sh" "$1" | python "$MAIN/tools/lowercase_and_remove_accent.py"
  else
    python "$MAIN/tools/lowercase_and_remove_accent.py"
  fi
}

seeded_random() {  # seed: the original's endless stream of pseudo-random bytes for shuf --random-source
  openssl enc -aes-256-ctr -pass pass:"$1" -nosalt < /dev/zero 2> /dev/null
}

split_data() {  # all, train, valid, test, n_valid, n_test: the lines of ALL in the order of the original's
  # `shuf --random-source=<(seeded_random 42) ALL`, the first ones to TRAIN, the next N_VALID to VALID, the last
  # N_TEST to TEST; the three appear together when complete.
  # shuf's permutation depends only on the number of lines, so shuffling the line numbers gives it without holding
  # the text in memory (shuf keeps ~25 bytes a line); the text is then put in that order by two disk-backed sorts.
  local all=$1 n_valid=$5 n_test=$6 n
  n=$(wc -l < "$all")
  [ "$n" -gt $((n_valid + n_test)) ] || die "$all: $n lines, not more than the $n_valid valid + $n_test test lines"
  local tmp=$all.split.tmp  # a fixed name, so that a rerun removes what an interrupted run left
  rm -rf "$tmp"
  mkdir "$tmp"
  : > "$tmp/train"; : > "$tmp/valid"; : > "$tmp/test"
  echo "Splitting $all ($n lines) into train / valid ($n_valid) / test ($n_test)"
  seq "$n" | shuf --random-source=<(seeded_random 42) > "$tmp/from"  # line i of the shuffle is line from[i] of ALL
  # to[k]: the place of line k of ALL in the shuffle
  awk '{ print $1 "\t" NR }' "$tmp/from" | LC_ALL=C sort -t $'\t' -k1,1n -T "$tmp" | cut -f2 > "$tmp/to"
  rm "$tmp/from"
  paste "$tmp/to" "$all" | LC_ALL=C sort -t $'\t' -k1,1n -T "$tmp" | cut -f2- |
    awk -v a=$((n - n_valid - n_test)) -v b=$((n - n_test)) -v dir="$tmp" '
      NR <= a { print > (dir "/train"); next }
      NR <= b { print > (dir "/valid"); next }
      { print > (dir "/test") }'
  mv "$tmp/train" "$2"
  mv "$tmp/valid" "$3"
  mv "$tmp/test" "$4"
  rm -rf "$tmp"
}

prepare_options() {  # list flag, "$@": the options of the prepare-*.sh scripts, --codes --vocab --input --output and
  # --<list flag> (a comma list), into CODES VOCAB INPUT OUTPUT ITEMS, whose defaults the script sets first; the codes
  # and vocabulary must exist and read as such (checked once here, before any job reads them), and the list must be
  # neither empty nor repeat an item
  local list_flag=$1 list=${ITEMS// /,}
  shift
  parse_options "codes=CODES vocab=VOCAB input=INPUT output=OUTPUT $list_flag=list" "$@"
  [ ${#ARGS[@]} -eq 0 ] || die "unknown argument ${ARGS[0]}"
  ITEMS=${list//,/ }
  [ -f "$CODES" ] || die "BPE codes $CODES not found (pass --codes)"
  [ -f "$VOCAB" ] || die "vocabulary $VOCAB not found (pass --vocab)"
  [ -n "$ITEMS" ] || die "--$list_flag: none given"
  local seen=" " item
  for item in $ITEMS; do  # a file prepared twice at once would be written by two jobs
    [[ "$seen" != *" $item "* ]] || die "--$list_flag: '$item' given twice"
    seen+="$item "
  done
  check_codes_vocab --codes "$CODES" --vocab "$VOCAB"
}

check_codes_vocab() {  # codes flag, codes, vocabulary flag, vocabulary: what applybpe and preprocess.py would each
  # refuse, found before any long work (--codes and --vocab swapped, say), as an error naming the flag
  local err
  err=$(PYTHONPATH="$MAIN${PYTHONPATH:+:$PYTHONPATH}" python - "$@" 2>&1 <<'EOF'
import sys
from xlm.data.bpe import read_codes
from xlm.data.dictionary import Dictionary
from xlm.fileio import DataError
codes_flag, codes, vocab_flag, vocab = sys.argv[1:]
try:
    read_codes(codes)
except DataError as e:
    sys.exit(f"{codes_flag}: {e}")
try:
    Dictionary.read_vocab(vocab)
except DataError as e:
    sys.exit(f"{vocab_flag}: {e}")
EOF
  ) || die "$err"
}

scratch_folder() {  # folder: TMP, a new folder inside FOLDER (made if missing) for the partial files, removed
  # when the script exits, whatever the exit
  mkdir -p "$1" || die "cannot make $1"
  TMP=$(mktemp -d "$1/.tmp.XXXXXX") || die "cannot make a folder in $1"
  trap 'rm -rf "$TMP"' EXIT
}

put_in_place() {  # for every i, SOURCES[i] to OUTPUTS[i] (its folder made): a file of sentences is BPE'd there with
  # $CODES and binarized to OUTPUTS[i].pth with $VOCAB, in a job of tools/jobs.sh ($JOBS at a time, default 2); then,
  # if every job succeeded, a file named label is moved there; outputs that exist are kept
  source "$MAIN/tools/jobs.sh"
  local i
  for i in "${!SOURCES[@]}"; do
    mkdir -p "$(dirname "${OUTPUTS[i]}")"
    case ${SOURCES[i]} in
      */label) ;;
      *) run_job bpe_and_binarize "${SOURCES[i]}" "${OUTPUTS[i]}";;
    esac
  done
  wait_jobs
  for i in "${!SOURCES[@]}"; do
    case ${SOURCES[i]} in
      */label) [ -f "${OUTPUTS[i]}" ] || mv "${SOURCES[i]}" "${OUTPUTS[i]}";;
    esac
  done
}

bpe_and_binarize() {  # sentences, output
  [ -f "$2" ] || python "$MAIN/tools/fastbpe" applybpe "$2" "$1" "$CODES"
  [ -f "$2.pth" ] || python "$MAIN/preprocess.py" "$VOCAB" "$2"
}

split_options() {  # what (named in messages), "$@": one positional argument into ARG, and --mirror --data_path
  # --n_valid --n_test into MIRROR DATA N_VALID N_TEST (defaults: none, ./data, the original's 5000 and 5000)
  local what=$1
  shift
  DATA=./data MIRROR='' N_VALID=5000 N_TEST=5000 ARG=''
  parse_options "mirror=MIRROR data_path=DATA n_valid=N_VALID n_test=N_TEST" "$@"
  [ ${#ARGS[@]} -le 1 ] || die "one $what only (${ARGS[0]}, then ${ARGS[1]})"
  ARG=${ARGS[0]:-}
  [ -n "$ARG" ] || die "usage: $0 ${what^^} [--mirror DIR_OR_URL] [--data_path ./data] [--n_valid 5000] [--n_test 5000]"
  check_count --n_valid "$N_VALID"
  check_count --n_test "$N_TEST"
  N_VALID=$((10#$N_VALID)) N_TEST=$((10#$N_TEST))
  check_mirror
}
