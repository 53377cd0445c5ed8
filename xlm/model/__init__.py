"""The XLM Transformer, decoding, and checkpoints."""
from .checkpoint import LoadedModel, load_model
from .transformer import TransformerConfig, TransformerModel

__all__ = ["load_model", "LoadedModel", "TransformerConfig", "TransformerModel"]
