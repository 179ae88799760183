"""The hub side of a shipped folder: its model card (compact_nlp.export.card) and the upload through huggingface_hub
(compact_nlp.io.push_folder, one commit, training state left out)."""

from __future__ import annotations

from .export.card import METRIC_NAMES, model_card, write_model_card
from .io import IGNORED, files_to_upload, push_folder

__all__ = ["IGNORED", "METRIC_NAMES", "files_to_upload", "model_card", "push_folder", "write_model_card"]
