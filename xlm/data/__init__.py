"""Data pipeline: text -> tokens -> BPE -> ids on disk -> batches.

Names are imported on first use, so command line tools that never batch (tokenize, fastbpe,
preprocess) start without importing torch.
"""
import importlib

_EXPORTS = {
    "load_binarized": "binarized", "BinarizedCorpus": "binarized", "Dictionary": "dictionary",
    "Batch": "datasets", "BatchingOptions": "datasets", "StreamDataset": "datasets",
    "SentenceDataset": "datasets", "ParallelDataset": "datasets", "BatchIterator": "iterators",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'xlm.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
