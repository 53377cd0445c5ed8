"""Sentence vectors from raw text with a pretrained (or fine-tuned) checkpoint.

    from xlm.embed import SentenceEncoder
    encoder = SentenceEncoder("mlm_tlm_xnli15_1024.pth", codes="codes_xnli_15", lowercase=True)
    vectors = encoder.encode(["Hello world!", "How are you?"], lang="en")   # (2, 1024) float tensor

Each sentence goes through the same steps as the training data: Moses tokenization for its
language, lower-casing and accent removal with `lowercase=True` (which a model trained on such text
needs and no checkpoint records: the XNLI-15 models were, the 17- and 100-language models were not),
BPE with the model's codes, and the model's vocabulary (unknown subwords become <unk>). The vector is
the last layer at the first position (`</s>`), the sentence representation the paper fine-tunes for XNLI.
"""
import numpy as np
import torch

from .data.bpe import BPEApplier
from .data.datasets import batch_sentences
from .data.tokenize import lowercase_and_remove_accent, tokenize
from .fileio import DataError
from .model.checkpoint import load_model
from .model.embedder import sentence_vectors


class SentenceEncoder:
    def __init__(self, model_path, codes=None, lowercase=False, device="cpu", vocab=None):
        """model_path: a checkpoint (pretrained `model`, or a translation model's `encoder`);
        codes: the BPE codes the model's data was segmented with (None: sentences are given tokenized,
        lower-cased if the model was, and BPE'd, and are taken as they are);
        vocab: the vocabulary file applybpe was given with the codes, if any."""
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise DataError(f"device '{device}': no CUDA device on this machine (use device='cpu')")
        loaded = load_model(model_path)
        self.model = loaded.encoder.to(device).eval()
        self.dico, self.device, self.lowercase = loaded.dico, torch.device(device), lowercase
        self.params = loaded.params
        self.lang2id = dict(loaded.params.get("lang2id") or {})
        self.bpe = BPEApplier(codes, vocab) if codes else None

    def preprocess(self, sentence, lang):
        """Raw text -> the model's subword tokens; without codes, the sentence as it is (Moses tokenization
        would split BPE's '@@' markers)."""
        if not self.bpe:
            return sentence
        line = tokenize(sentence, lang)
        if self.lowercase:
            line = lowercase_and_remove_accent(line)
        return self.bpe(line)

    @torch.no_grad()
    def encode(self, sentences, lang, batch_size=32, preprocessed=False):
        """(len(sentences), dim) vectors; preprocessed=True takes tokenized and BPE'd sentences as they are
        (as an encoder without codes always does)."""
        if isinstance(sentences, (str, bytes)):
            raise DataError("encode takes a list of sentences, not one string: encode([sentence], lang)")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if self.lang2id and lang not in self.lang2id:
            raise DataError(f"language '{lang}' is not one of the model's ({', '.join(self.lang2id)})")
        lang_id = self.lang2id.get(lang)
        tokens = [s.split() if preprocessed else self.preprocess(s, lang).split() for s in sentences]
        ids = [[self.dico.index(w) for w in t] for t in tokens]
        longest = self.model.config.n_positions - 2  # and the two </s> around each sentence
        for i, t in enumerate(ids):
            if len(t) > longest:
                raise DataError(f"sentence {i}: {len(t)} subwords, more than the {longest} the model's "
                                f"{self.model.config.n_positions} positions hold with the two </s>")
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths batch with little padding
        vectors = torch.empty(len(ids), self.model.config.emb_dim)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = batch_sentences([np.array(ids[i], dtype=np.int64) for i in chunk])
            x, lengths = batch.x.to(self.device), batch.lengths.to(self.device)
            langs = torch.full_like(x, lang_id) if lang_id is not None else None
            vectors[chunk] = sentence_vectors(self.model, x, lengths, langs).float().cpu()
        return vectors
