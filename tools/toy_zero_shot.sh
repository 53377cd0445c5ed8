#!/usr/bin/env bash
# Toy reproduction of the paper's zero-shot cross-lingual classification (XNLI) result.
#
# Three synthetic languages with one latent grammar (tools/toy_languages.py): la (SVO), lb (SVO,
# noun-adjective, tense suffix) and lc (verb-final, postpositions). An XNLI-like task is labelled in
# la only; a classifier is fine-tuned on it (glue-xnli.py --transfer_tasks XNLI --xnli_train_lang la)
# and evaluated in la, lb and lc, from three initialisations of the same Transformer:
#   none     random weights (no pretraining)
#   mlm      MLM on the monolingual data of the three languages
#   mlm_tlm  MLM + TLM (MLM on la-lb and la-lc translation pairs as well)
# The model is selected on la's valid accuracy (no label of lb or lc is used); the table gives the
# test accuracies of that epoch. Chance is 33.3%.
#
#   bash tools/toy_zero_shot.sh                 # OUT=/tmp/toy_xnli
# Knobs: OUT (work folder), PRETRAIN_EPOCHS, FT_EPOCHS, N_MONO, N_PARA, N_CLS, VOCAB_SIZE (concepts),
# TYPOLOGY (word orders of la,lb,lc; svo,svo,svo leaves only the vocabularies different).
# Measured results (MLM+TLM > MLM > none, about +10 points over chance for MLM+TLM): README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/toy_xnli}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-5}
FT_EPOCHS=${FT_EPOCHS:-5}
N_MONO=${N_MONO:-20000}
N_PARA=${N_PARA:-10000}
N_CLS=${N_CLS:-6000}
VOCAB_SIZE=${VOCAB_SIZE:-60}
TYPOLOGY=${TYPOLOGY:-svo,svo_na,sov}
RAW=$OUT/raw
DATA=$OUT/processed
LANGS="la lb lc"
start=$(date +%s)

[ -f "$RAW/README.txt" ] || python tools/toy_languages.py --out "$RAW" --langs la,lb,lc --typology "$TYPOLOGY" \
  --n_mono "$N_MONO" --n_para "$N_PARA" --n_valid 500 --n_test 500 --n_cls_train "$N_CLS" --n_cls_eval 1000 \
  --vocab_size "$VOCAB_SIZE" > /dev/null
mkdir -p "$DATA/eval/XNLI"
# the toy words need no BPE: the vocabulary is the words themselves
if [ ! -f "$DATA/vocab" ]; then
  for lg in $LANGS; do cut -f1,2 "$RAW/cls/$lg.train" | tr '\t' '\n'; done > "$DATA/cls_text"
  python tools/fastbpe getvocab "$RAW"/mono/train.* "$RAW"/para/train.* "$DATA/cls_text" > "$DATA/vocab.tmp"
  mv "$DATA/vocab.tmp" "$DATA/vocab"
fi
binarize() {  # text file, output .pth (quiet unless it fails)
  [ -f "$2" ] || python preprocess.py "$DATA/vocab" "$1" "$2" > /dev/null 2>&1 || python preprocess.py "$DATA/vocab" "$1" "$2"
}
for split in train valid test; do
  for lg in $LANGS; do
    binarize "$RAW/mono/$split.$lg" "$DATA/$split.$lg.pth"
  done
  for pair in la-lb la-lc; do
    for lg in ${pair/-/ }; do
      binarize "$RAW/para/$split.$pair.$lg" "$DATA/$split.$pair.$lg.pth"
    done
  done
  # XNLI layout: {split}.s1.{lg}, {split}.s2.{lg}, {split}.label.{lg}; training data in la only
  for lg in $LANGS; do
    [ $split = train ] && [ $lg != la ] && continue
    for col in 1 2; do
      [ -f "$DATA/eval/XNLI/$split.s$col.$lg" ] || cut -f$col "$RAW/cls/$lg.$split" > "$DATA/eval/XNLI/$split.s$col.$lg"
      binarize "$DATA/eval/XNLI/$split.s$col.$lg" "$DATA/eval/XNLI/$split.s$col.$lg.pth"
    done
    cut -f3 "$RAW/cls/$lg.$split" > "$DATA/eval/XNLI/$split.label.$lg"
  done
done
echo "data ready after $(( $(date +%s) - start )) s"

MODEL="--emb_dim 128 --n_layers 2 --n_heads 4 --gelu_activation true --dropout 0.1 --attention_dropout 0"
pretrain() {  # name, --mlm_steps, --epoch_size (100 iterations of one step per language or pair)
  local ckpt=$OUT/dumped/toy_pretrain/$1/checkpoint.pth
  if [ ! -f "$OUT/$1.pth" ]; then
    # --bptt 32: with 64 the MLM stays much longer on its unigram plateau (it ignores the context)
    python train.py --exp_name toy_pretrain --exp_id "$1" --dump_path "$OUT/dumped" --data_path "$DATA" \
      --lgs la-lb-lc --mlm_steps "$2" $MODEL --batch_size 64 --bptt 32 \
      --optimizer adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.002,warmup_updates=100 --epoch_size "$3" \
      --max_epoch "$PRETRAIN_EPOCHS" --log_interval 50 | grep -E "valid_mlm_ppl ->" | sed "s/^.* - /$1: /" || true
    cp "$ckpt" "$OUT/$1.pth"
  fi
  echo "pretrained $1 after $(( $(date +%s) - start )) s"
}
pretrain mlm la,lb,lc 19200
pretrain mlm_tlm la,lb,lc,la-lb,la-lc 32000
# the same architecture and vocabulary with fresh random weights
[ -f "$OUT/none.pth" ] || python - "$OUT/mlm.pth" "$OUT/none.pth" <<'EOF'
import sys
import torch
from xlm import load_model
from xlm.model.checkpoint import checkpoint_payload, save_checkpoint
from xlm.model.transformer import TransformerModel
loaded = load_model(sys.argv[1])
torch.manual_seed(0)
save_checkpoint(checkpoint_payload(loaded.dico, loaded.params, model=TransformerModel(loaded.encoder.config)), sys.argv[2])
EOF

for init in none mlm mlm_tlm; do
  best=$OUT/dumped/toy_xnli/$init/best-xnli_valid_la_acc.pth
  [ -f "$OUT/dumped/toy_xnli/$init/done" ] || {
    python glue-xnli.py --exp_name toy_xnli --exp_id $init --dump_path "$OUT/dumped" --model_path "$OUT/$init.pth" \
      --data_path "$DATA" --transfer_tasks XNLI --xnli_train_lang la --optimizer_e adam,lr=0.0005 \
      --optimizer_p adam,lr=0.0005 --finetune_layers 0:_1 --batch_size 32 --n_epochs "$FT_EPOCHS" \
      --epoch_size -1 --log_interval 100 > /dev/null
    touch "$OUT/dumped/toy_xnli/$init/done"
  }
  echo "fine-tuned $init after $(( $(date +%s) - start )) s"
done

python - "$OUT" <<'EOF'
import sys
from xlm.model.checkpoint import read_checkpoint
out = sys.argv[1]
print("| pretraining | epoch | la valid | la test | lb test (zero-shot) | lc test (zero-shot) |")
print("|---|---|---|---|---|---|")
for init in ("none", "mlm", "mlm_tlm"):
    s = read_checkpoint(f"{out}/dumped/toy_xnli/{init}/best-xnli_valid_la_acc.pth")["scores"]
    print(f"| {init} | {s['epoch']} | {s['xnli_valid_la_acc']:.1f} | {s['xnli_test_la_acc']:.1f} | "
          f"{s['xnli_test_lb_acc']:.1f} | {s['xnli_test_lc_acc']:.1f} |")
EOF
echo "total $(( $(date +%s) - start )) s"
