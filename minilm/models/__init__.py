"""Language models: GPT and the Llama family (causal LMs), BERT (masked LM, classification), the LSTM LM."""

from .bert import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    l2_normalize,
    mean_pooling,
    sentence_embeddings,
)
from .gpt import GPT, GPTConfig
from .hf import CheckpointError
from .llama import Llama, LlamaConfig
from .lstm import LSTMConfig, LSTMLanguageModel

__all__ = [
    "GPT", "GPTConfig", "Llama", "LlamaConfig", "BertConfig", "BertModel", "BertForMaskedLM",
    "BertForSequenceClassification", "LSTMConfig", "LSTMLanguageModel", "CheckpointError", "mean_pooling",
    "l2_normalize", "sentence_embeddings",
]
