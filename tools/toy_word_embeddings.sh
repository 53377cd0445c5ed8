#!/usr/bin/env bash
# Toy reproduction of the paper's unsupervised cross-lingual word embeddings result (Lample & Conneau
# 2019, §5.6, Table 5: the input embeddings of a cross-lingual MLM put translations close together:
# higher cosine similarity and lower L2 distance between a word and its translation than other
# unsupervised embeddings).
#
# Two synthetic languages with one latent grammar and disjoint vocabularies (tools/toy_languages.py,
# the setting of toy_unsupervised_mt.sh: same SVO order, no compounds, shared anchors: names, digits,
# "."), no parallel data. The generator's gold lexicon gives the translation pairs of the open-class
# words (nouns, verbs, adjectives, adverbs; the anchors, identical in both, are left out). Compared:
#   joint     one MLM on the monolingual data of both languages (--mlm_steps la,lb)
#   separate  one MLM on la alone and one on lb alone (same model, vocabulary and updates): la's words
#             from the first, lb's from the second, two embedding spaces trained independently
# tools/embedding_alignment.py measures the mean cosine similarity and L2 distance of the translation
# pairs' input embeddings and the P@1 of nearest-neighbour translation la -> lb (among the lexicon's lb
# words; chance = 1 / their number), mean ± sd over the seeds. Each seed draws new languages
# (toy_languages.py --seed SEED-1) and new training runs (train.py --seed SEED).
#
#   bash tools/toy_word_embeddings.sh             # OUT=/tmp/toy_word_emb, SEEDS=3
# Knobs: OUT, SEEDS, N_MONO, VOCAB_SIZE (concepts), EPOCHS (default 6), EPOCH_SIZE (sentences an epoch),
# JOBS (runs at once, one thread each; default 2).
# Idempotent: steps whose outputs exist are skipped, a finished run ends at once.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/toy_word_emb}
SEEDS=${SEEDS:-3}
N_MONO=${N_MONO:-30000}
VOCAB_SIZE=${VOCAB_SIZE:-100}
EPOCHS=${EPOCHS:-6}
EPOCH_SIZE=${EPOCH_SIZE:-19200}
source tools/jobs.sh  # run_job, wait_jobs: $JOBS (default 2) at a time
export OMP_NUM_THREADS=1
start=$(date +%s)

data() {  # seed: languages, gold lexicon, one vocabulary for all models, binarized files
  local raw=$OUT/seed$1/raw data=$OUT/seed$1/processed
  mkdir -p "$data"
  [ -f "$raw/README.txt" ] || python tools/toy_languages.py --out "$raw" --langs la,lb --typology svo,svo \
    --n_mono "$N_MONO" --n_para 0 --n_valid 500 --n_test 500 --n_cls_train 0 --n_cls_eval 0 \
    --vocab_size "$VOCAB_SIZE" --compound_rate 0 --seed $(( $1 - 1 )) > /dev/null
  # lexicon.tsv: id, category, gloss, domain, la word, lb word
  [ -f "$raw/lexicon.la-lb.txt" ] || awk -F'\t' 'NR > 1 && $2 ~ /^(noun|verb|adj|adv)$/ { print $5, $6 }' \
    "$raw/lexicon.tsv" > "$raw/lexicon.la-lb.txt"
  [ -f "$data/vocab" ] || python tools/fastbpe getvocab "$raw/mono/train.la" "$raw/mono/train.lb" > "$data/vocab"
  for lg in la lb; do
    for split in train valid test; do
      # quiet unless it fails
      [ -f "$data/$split.$lg.pth" ] || python preprocess.py "$data/vocab" "$raw/mono/$split.$lg" "$data/$split.$lg.pth" \
        > /dev/null 2>&1 || python preprocess.py "$data/vocab" "$raw/mono/$split.$lg" "$data/$split.$lg.pth"
    done
  done
}

MODEL="--emb_dim 128 --n_layers 2 --n_heads 4 --gelu_activation true --dropout 0.1 --attention_dropout 0"
mlm() {  # seed, name, --mlm_steps
  local dump=$OUT/seed$1/dumped
  [ -f "$dump/toy_word_emb/$2/done" ] && return
  # --bptt 32: with 64 the MLM stays much longer on its unigram plateau (it ignores the context)
  python train.py --exp_name toy_word_emb --exp_id "$2" --dump_path "$dump" --data_path "$OUT/seed$1/processed" \
    --lgs la-lb --mlm_steps "$3" $MODEL --batch_size 64 --bptt 32 --seed "$1" \
    --optimizer adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.002,warmup_updates=100 --epoch_size "$EPOCH_SIZE" \
    --max_epoch "$EPOCHS" --log_interval 100 > "$OUT/seed$1/mlm_$2.out" 2>&1
  touch "$dump/toy_word_emb/$2/done"
}

for seed in $(seq 1 "$SEEDS"); do
  data "$seed"
  for run in joint:la,lb la:la lb:lb; do
    run_job mlm "$seed" "${run%%:*}" "${run#*:}"
  done
done
wait_jobs
echo "trained after $(( $(date +%s) - start )) s"

for seed in $(seq 1 "$SEEDS"); do
  models=$OUT/seed$seed/dumped/toy_word_emb
  lexicon=$OUT/seed$seed/raw/lexicon.la-lb.txt
  [ -f "$OUT/seed$seed/joint.json" ] || python tools/embedding_alignment.py "$models/joint/checkpoint.pth" "$lexicon" \
    --output "$OUT/seed$seed/joint.json" > /dev/null
  [ -f "$OUT/seed$seed/separate.json" ] || python tools/embedding_alignment.py "$models/la/checkpoint.pth" "$lexicon" \
    --tgt_checkpoint "$models/lb/checkpoint.pth" --output "$OUT/seed$seed/separate.json" > /dev/null
done
echo "translation pairs of la -> lb (open-class words of the gold lexicon), mean ± sd over $SEEDS seeds:"
python tools/seed_table.py --seeds "$SEEDS" --first embeddings --json "$OUT/results.json" \
  --columns "cosine=cosine similarity,l2=L2 distance,p_at_1=P@1 la→lb" \
  "joint MLM=$OUT/seed{seed}/joint.json" "each language alone=$OUT/seed{seed}/separate.json"
echo "P@1 by chance: 1/$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['candidates'])" "$OUT/seed1/joint.json") (the lexicon's lb words)"
echo "per-seed values: $OUT/results.json; total $(( $(date +%s) - start )) s"
