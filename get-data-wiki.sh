#!/usr/bin/env bash
# The latest Wikipedia dump of one language as monolingual training text, prepared like the original XLM's
# get-data-wiki.sh (same files, same names, same split) on xlm's own tools:
#
#   ./get-data-wiki.sh LG [--mirror DIR_OR_URL] [--data_path ./data] [--n_valid 5000] [--n_test 5000]
#
# Downloads LGwiki-latest-pages-articles.xml.bz2 into DATA/wiki/bz2/, extracts its text with WikiExtractor (the
# wikiextractor package: pip install 'xlm[wiki]'), drops empty lines and <doc> tags, tokenizes with
# tools/tokenize.sh LG, lower-cases and strips accents with tools/lowercase_and_remove_accent.py into
# DATA/wiki/txt/LG.all, and splits it with the original's seeded shuffle (seed 42) into LG.train (all but the
# last N_VALID + N_TEST lines of the shuffle), LG.valid (the next N_VALID) and LG.test (the last N_TEST).
#
# --mirror fetches the dump by its file name from a local folder or an http(s) prefix instead of
# dumps.wikimedia.org (clusters without internet). The dump is checked before use; every output is written under
# a temporary name and renamed when complete; steps whose outputs exist are skipped. Memory stays bounded
# whatever the dump size: everything streams, and the split sorts on disk.
set -euo pipefail
MAIN=$(cd "$(dirname "$0")" && pwd)
source "$MAIN/tools/data_lib.sh"  # fetch, tokenize_lower_pipe, split_data, die
split_options language "$@"
LG=$ARG

WIKI=$DATA/wiki TXT=$DATA/wiki/txt
ALL=$TXT/$LG.all
DUMP=${LG}wiki-latest-pages-articles.xml.bz2
mkdir -p "$WIKI/bz2" "$TXT"

if [ -f "$ALL" ]; then
  echo "$ALL exists, skipped"
else
  # fail now rather than after the download if a tool is missing
  python -c 'import wikiextractor' 2> /dev/null || die "the wikiextractor package is missing: pip install 'xlm[wiki]'"
  check_segmenter "$LG"
  fetch "https://dumps.wikimedia.org/${LG}wiki/latest/$DUMP" "$WIKI/bz2"
  echo "Extracting, tokenizing, lower-casing the $LG Wikipedia dump..."
  # WikiExtractor's traceback (a dump that is not UTF-8, say) is kept aside and told in one line
  trap 'rm -f "$ALL.tmp" "$ALL.err"' EXIT
  status=(0)
  python -m wikiextractor.WikiExtractor "$WIKI/bz2/$DUMP" --processes "$(nproc)" -q -o - 2> "$ALL.err" |
    sed -e '/^\s*$/d' -e '/^<doc id=/d' -e '/<\/doc>$/d' |
    tokenize_lower_pipe "$LG" > "$ALL.tmp" || status=("${PIPESTATUS[@]}")
  [ "${status[-1]}" = 0 ] || exit "${status[-1]}"  # the tokenizer said why
  if [ "${status[0]}" != 0 ]; then
    why=$(grep -v '^\s' "$ALL.err" | tail -n 1 || true)
    die "$WIKI/bz2/$DUMP: WikiExtractor failed (${why:-status ${status[0]}}); remove it to fetch it again"
  fi
  [ -s "$ALL.tmp" ] || die "$WIKI/bz2/$DUMP: no article text in the dump"
  mv "$ALL.tmp" "$ALL"
fi

if [ -f "$TXT/$LG.train" ] && [ -f "$TXT/$LG.valid" ] && [ -f "$TXT/$LG.test" ]; then
  echo "$TXT/$LG.{train,valid,test} exist, skipped"
else
  split_data "$ALL" "$TXT/$LG.train" "$TXT/$LG.valid" "$TXT/$LG.test" "$N_VALID" "$N_TEST"
fi
echo "Done: $TXT/$LG.{train,valid,test}"
