"""xlm: cross-lingual language model pretraining (Lample & Conneau, 2019) on current PyTorch.

Public entry points: xlm.data.load_binarized(path) and xlm.load_model(path).
"""


def load_binarized(path):
    """Open a binarized corpus (this project's format or the original's .pth); see xlm.data.binarized."""
    from .data.binarized import load_binarized as load
    return load(path)


def load_model(path):
    """Load a checkpoint of the original XLM's layout; see xlm.model.checkpoint.load_model."""
    from .model.checkpoint import load_model as load
    return load(path)
