"""Translation objectives as functions of a batch: denoising auto-encoding (AE), supervised MT, and
online back-translation (BT). Sentences are batch-first `</s> w1 ... wn </s>` rows."""
import torch

from ..data.datasets import Batch
from ..data.dictionary import EOS_INDEX, MASK_INDEX, PAD_INDEX
from ..model.transformer import flat_positions
from .lm import clm_targets


@torch.no_grad()
def add_noise(batch, word_shuffle, word_dropout, word_blank, generator):
    """The original's noise for AE, in its order: shuffle (each word moves by less than word_shuffle),
    drop words (keeping at least one), blank words (replaced by the mask); the </s> at both ends stay."""
    rows = []
    for x, n in zip(batch.x, batch.lengths.tolist()):
        words = x[1:n - 1]
        if word_shuffle > 0 and len(words) > 1:
            keys = torch.arange(len(words)) + torch.rand(len(words), generator=generator) * word_shuffle
            words = words[keys.argsort()]
        if word_dropout > 0 and len(words) > 0:
            keep = torch.rand(len(words), generator=generator) >= word_dropout
            if not keep.any():
                keep[torch.randint(len(words), (1,), generator=generator)] = True
            words = words[keep]
        if word_blank > 0 and len(words) > 0:
            blank = torch.rand(len(words), generator=generator) < word_blank
            words = torch.where(blank, torch.full_like(words, MASK_INDEX), words)
        rows.append(words)
    lengths = torch.tensor([len(w) + 2 for w in rows])
    x = torch.full((len(rows), int(lengths.max())), PAD_INDEX, dtype=torch.long)
    for i, w in enumerate(rows):
        x[i, 0], x[i, 1:len(w) + 1], x[i, len(w) + 1] = EOS_INDEX, w, EOS_INDEX
    return Batch(x, lengths)


def decoder_positions(x, lengths):
    """Teacher forcing, CLM's targets (position t < length - 1 predicts token t + 1) as (flat positions,
    targets), made on the CPU for `mt_loss`."""
    pred_mask, y = clm_targets(x, lengths)
    return flat_positions(pred_mask), y


def mt_loss(encoder, decoder, src, src_lang, tgt, tgt_lang, targets):
    """Cross-entropy of the decoder on tgt given the encoder's reading of src (Batches on the device);
    targets: decoder_positions of tgt moved to the device."""
    enc = encoder(src.x, src.lengths, langs=src_lang)
    pred, y = targets
    return decoder(tgt.x, tgt.lengths, langs=tgt_lang, causal=True, src_enc=enc, src_len=src.lengths,
                   pred_mask=pred, y=y)
