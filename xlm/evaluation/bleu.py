"""BLEU as the original XLM reports it, on sacrebleu.

`tokenized_bleu` is Moses' multi-bleu.perl (which the original runs): corpus BLEU over the whitespace
tokens of the tokenized, BPE-removed text, case-sensitive, one reference, no smoothing (a zero n-gram
precision gives 0). `detokenized_bleu` is the comparable score of today's papers: Moses-detokenized
text scored by sacrebleu with its default tokenizer, returned with sacrebleu's signature.
"""
import sacrebleu

from ..data.bpe import remove_bpe


def tokenized_bleu(hypotheses, references):
    """multi-bleu.perl's score (0-100) of hypothesis lines against reference lines; -1 where the hypotheses
    hold no word, the original's value when the script fails (a division by zero)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not any(h.split() for h in hypotheses):
        return -1.0
    return sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none", smooth_method="none",
                                 force=True).score


def detokenized_bleu(hypotheses, references, lang):
    """(score, signature) of detokenized text, sacrebleu's default settings."""
    from sacremoses import MosesDetokenizer  # here: importing sacremoses takes 0.5 s of every start
    detok = MosesDetokenizer(lang=lang)
    hyps = [detok.detokenize(h.split()) for h in hypotheses]
    refs = [detok.detokenize(r.split()) for r in references]
    metric = sacrebleu.metrics.BLEU()
    return metric.corpus_score(hyps, [refs]).score, str(metric.get_signature())


def reference_for_bleu(line):
    """What the original writes to its reference files: BPE removed, <unk> as <<unk>>, which no hypothesis
    word matches (its hypothesis files keep <unk>)."""
    return remove_bpe(line.replace("<unk>", "<<unk>>"))
