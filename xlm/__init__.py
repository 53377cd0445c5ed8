"""xlm: cross-lingual language model pretraining (Lample & Conneau, 2019) on current PyTorch."""


def load_binarized(path):
    """Open a binarized corpus (this project's format or the original's .pth); see xlm.data.binarized."""
    from .data.binarized import load_binarized as load
    return load(path)
