"""Layers and models as `Module`s: parameters, submodules, state dicts.

    from minilm import nn
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    model.num_parameters(), model.state_dict().keys()
"""

from . import init, lora, utils
from .attention import KVCache, MultiHeadAttention
from .checkpoint import GradientCheckpointingMixin, checkpoint, checkpoint_blocks, uncheckpoint_blocks
from .layers import GELU, Dropout, Embedding, LayerNorm, Linear, ReLU, RMSNorm, Sigmoid, SiLU, Tanh
from .module import IncompatibleKeys, Module, ModuleDict, ModuleList, Parameter, Sequential
from .recurrent import LSTM, RNN
from .rotary import RotaryEmbedding
from .transformer import MLP, SwiGLU, TransformerBlock

__all__ = [
    "GELU", "GradientCheckpointingMixin", "LSTM", "MLP", "RNN", "Dropout", "Embedding", "IncompatibleKeys", "KVCache",
    "LayerNorm", "Linear",
    "Module", "ModuleDict", "ModuleList", "MultiHeadAttention", "Parameter", "ReLU", "RMSNorm", "RotaryEmbedding",
    "Sequential", "Sigmoid", "SiLU", "SwiGLU", "Tanh", "TransformerBlock", "checkpoint", "checkpoint_blocks", "init",
    "lora", "uncheckpoint_blocks", "utils",
]
