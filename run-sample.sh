#!/usr/bin/env bash
# The main job on the bundled sample data (data/sample): tokenize, learn and apply BPE, build the
# vocabulary, binarize, and summarise the corpora, with the original XLM's file names, into
# data/processed/sample/ (override with OUT=...; N_CODES=... BPE codes, default 8000; SAMPLE=... another folder
# of raw text in the sample's layout, mono/ and para/, e.g. the sample's lines joined five by five for long
# sentences: `paste -d' ' - - - - - < data/sample/mono/train.en`); then a short MLM+TLM
# pretraining of a small English-French XLM (PRETRAIN=0 skips it) that prints its validation perplexities.
# Steps whose outputs exist are skipped, and rerunning resumes (or ends at once if the run is complete).
set -euo pipefail
cd "$(dirname "$0")"
SRC=${SAMPLE:-data/sample}
OUT=${OUT:-data/processed/sample}
N_CODES=${N_CODES:-8000}
LANGS="en fr de"
PAIRS="de-en en-fr"
mkdir -p "$OUT/tok"
bash tools/install_fastbpe.sh  # the compiled fastBPE when it builds (tools/fastbpe falls back to Python)

# Each step works on two files at a time (tools/jobs.sh, JOBS=2): a small file's time is mostly the
# start of Python, and the big ones share the cores.
source tools/jobs.sh
tokenize() {  # raw file, language, tokenized output
  echo "tokenize $1"
  bash tools/tokenize.sh "$2" < "$1" > "$3.tmp"
  mv "$3.tmp" "$3"
}
binarize() {  # BPE'd file: quiet, unless it fails
  python preprocess.py "$OUT/vocab" "$1" > /dev/null 2>&1 || python preprocess.py "$OUT/vocab" "$1"
}
for split in train valid test; do
  for lg in $LANGS; do
    [ -s "$OUT/tok/$split.$lg" ] || run_job tokenize "$SRC/mono/$split.$lg" "$lg" "$OUT/tok/$split.$lg"
  done
  for pair in $PAIRS; do
    for lg in ${pair//-/ }; do
      [ -s "$OUT/tok/$split.$pair.$lg" ] || run_job tokenize "$SRC/para/$split.$pair.$lg" "$lg" "$OUT/tok/$split.$pair.$lg"
    done
  done
done
wait_jobs

# joint BPE codes and vocabulary over the monolingual training text of every language
mono_train=(); for lg in $LANGS; do mono_train+=("train.$lg"); done
# (if, not a || list: set -e stops at a failure in the body of an if)
if [ ! -s "$OUT/codes" ]; then
  echo "learn $N_CODES BPE codes"
  python tools/fastbpe learnbpe "$N_CODES" "${mono_train[@]/#/$OUT/tok/}" > "$OUT/codes.tmp"
  # what earlier codes made is made again with these
  rm -f "$OUT"/{train,valid,test}.* "$OUT/vocab"
  echo "$N_CODES" > "$OUT/codes.n_codes"  # what was asked: learnbpe stops early when no pair is left
  mv "$OUT/codes.tmp" "$OUT/codes"
elif learnt=$(cat "$OUT/codes.n_codes" 2> /dev/null || wc -l < "$OUT/codes"); [ "$learnt" -ne "$N_CODES" ]; then
  echo "error: run-sample.sh: $OUT/codes was learnt with N_CODES=$learnt, not N_CODES=$N_CODES: remove $OUT/codes" \
    "(the files made with it are then made again) or choose another OUT" >&2
  exit 1
fi
for f in "$OUT"/tok/*; do
  name=$(basename "$f")
  [ -s "$OUT/$name" ] || run_job python tools/fastbpe applybpe "$OUT/$name" "$f" "$OUT/codes"
done
wait_jobs
if [ ! -s "$OUT/vocab" ]; then
  python tools/fastbpe getvocab "${mono_train[@]/#/$OUT/}" > "$OUT/vocab.tmp"
  mv "$OUT/vocab.tmp" "$OUT/vocab"
fi
for f in "$OUT"/tok/*; do
  name=$(basename "$f")
  [ -s "$OUT/$name.pth" ] || run_job binarize "$OUT/$name"
done
wait_jobs
python tools/corpus_summary.py "$OUT"

[ "${PRETRAIN:-1}" = 0 ] && exit 0
# The original README's MLM+TLM command for en-fr, with a tiny model and short epochs so that it
# runs in about 4 minutes on 2 CPU cores. A small MLM first learns the word frequencies, then stays
# for thousands of updates on that plateau (ppl near the unigram's) unless its batches are wide and
# its learning rate high: 64 windows a batch with lr 0.005 (warm-up 500) leave it after ~1,000
# updates (--bptt 8 or 16 alike), where batches of 32 or lr 0.001 still sit on it after 3,000.
DUMP=${DUMP:-dumped}
RUN="$DUMP/sample_mlm_tlm/${EXP_ID:-sample}"
python train.py --exp_name sample_mlm_tlm --exp_id ${EXP_ID:-sample} --dump_path "$DUMP" --data_path "$OUT" \
  --lgs 'en-fr' --mlm_steps 'en,fr,en-fr' \
  --emb_dim 64 --n_layers 2 --n_heads 4 --dropout 0.1 --attention_dropout 0.1 --gelu_activation true \
  --batch_size 64 --bptt 8 --max_len 60 --optimizer adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.005,warmup_updates=500 \
  --epoch_size 32000 --max_epoch ${MAX_EPOCH:-10} --validation_metrics _valid_mlm_ppl --stopping_criterion _valid_mlm_ppl,10 \
  --log_interval 20 2>&1 | grep -E "End of epoch|valid_.*mlm_ppl ->|Reached|Resumed|error|Error"
echo "Pretraining done: $RUN/ (train.log, checkpoint.pth, best-valid_mlm_ppl.pth)"

echo
echo "Perplexity on the masked validation tokens (the run's own masks), against predicting each by its"
echo "frequency in its language's training text (a unigram model, which ignores the context):"
python tools/unigram_ppl.py "$RUN/best-valid_mlm_ppl.pth" --data_path "$OUT"

echo
echo "Masked-word predictions on held-out sentences (the first 4 valid sentences of 6-14 words, one word"
echo "masked at random; rank and probability of the truth, then the model's top 5):"
awk 'NF >= 6 && NF <= 14 && n++ < 4' "$SRC/mono/valid.en" \
  | python tools/fill_mask.py "$RUN/best-valid_mlm_ppl.pth" --codes "$OUT/codes" --lang en --mask random --seed 1
echo
echo "TLM: French valid sentences with a word masked, alone and with their English translation beside them"
echo "(the first 2 pairs of 6-14 words a side), then the same over the first 300 such pairs:"
pairs=$(mktemp -d)
trap 'rm -rf "$pairs"' EXIT
paste "$SRC/para/valid.en-fr.fr" "$SRC/para/valid.en-fr.en" \
  | awk -F'\t' '{ n = split($1, a, " "); m = split($2, b, " ") } n >= 6 && n <= 14 && m >= 6 && m <= 14 && k++ < 300' \
  > "$pairs/fr-en"
cut -f1 "$pairs/fr-en" > "$pairs/fr"
cut -f2 "$pairs/fr-en" > "$pairs/en"
tlm() { python tools/fill_mask.py "$RUN/best-valid_mlm_ppl.pth" --codes "$OUT/codes" --lang fr --mask random --seed 1 \
  --translation_lang en "$@"; }
head -2 "$pairs/fr" > "$pairs/fr2"
head -2 "$pairs/en" > "$pairs/en2"
tlm --translations "$pairs/en2" < "$pairs/fr2" | head -n -1
tlm --translations "$pairs/en" --summary < "$pairs/fr"
