"""Training: tasks (what to learn), the Trainer (the loop), checkpoints (resume bit for bit).

    from minilm.train import CausalLMTask, Trainer, TrainingConfig
    task = CausalLMTask(train_ids, val_ids, block_size=128, batch_size=16)
    Trainer(model, task, TrainingConfig(max_steps=600), out_dir="runs/x").fit()

    tasks.py       CausalLMTask, MaskedLMTask, ClassificationTask, ChatTuningTask: data, loss and evaluation
                   of one kind of training
    chat_data.py   conversations (JSONL or built-in) rendered with a chat template, assistant-only labels
    trainer.py     TrainingConfig and the Trainer: the loop, schedule, mixed precision, logging, early stopping
    seq2seq.py     Seq2SeqTask (source/target pairs for encoder-decoder models), translate, BLEU/ROUGE-L scoring
    checkpoint.py  saving and restoring a run (model, optimizer, loss scale, schedule, data position)
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .seq2seq import Seq2SeqTask
from .tasks import CausalLMTask, ChatTuningTask, ClassificationTask, MaskedLMTask
from .trainer import Trainer, TrainingConfig, TrainingDiverged, TrainingInterrupted

__all__ = ["CausalLMTask", "ChatTuningTask", "ClassificationTask", "MaskedLMTask", "Seq2SeqTask", "Trainer",
           "TrainingConfig", "TrainingDiverged", "TrainingInterrupted", "load_checkpoint", "save_checkpoint"]
