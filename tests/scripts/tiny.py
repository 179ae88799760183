"""Tiny random models and data shared by the trainer tests and the scripts they launch."""

import datasets
import torch

from compact_nlp import CompactBertConfig, CompactBertForSequenceClassification


def tiny_classifier(hidden: int = 32, heads: int = 4, layers: int = 2, num_labels: int = 2):
    config = CompactBertConfig(vocab_size=99, hidden_size=hidden, head_dim=8, num_heads_per_layer=[heads] * layers,
                               intermediate_size_per_layer=[37] * layers, max_position_embeddings=64,
                               num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return CompactBertForSequenceClassification(config)


def random_dataset(rows: int, length: int = 12, seed: int = 0) -> datasets.Dataset:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 99, (rows, length), generator=generator)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[::3, length // 2:] = 0  # every third example is padded
    ids[mask == 0] = 0
    labels = torch.randint(0, 2, (rows,), generator=generator)
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(),
                                       "labels": labels.tolist()})
