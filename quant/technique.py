"""Quantization as a registered technique (compact_nlp.registry): the recipe's `quant:` section, int8 (PTQ or QAT)
or binary weights. With `quant.int8.fallback_to_ptq`, QAT's export and PTQ of the starting model are both offered
to the held-out split, which ships the better one."""

from __future__ import annotations

from dataclasses import replace

from ..registry import ExportContext, PlanOption, Prepared, Technique, TrainContext, register
from .cli import add_quantize_command
from .config import BinaryConfig, Int8Config
from .recipes import check_distillation, exporter, prepare, quant_config


class Quantization(Technique):
    name = "quant"
    order = 20  # last: QAT learns its ranges on the final architecture, the binary export packs the final shapes
    description = "int8 (PTQ, QAT as in Q8BERT) or binary weights (BinaryBERT/BiT), distilled"

    def config(self, section: dict | None):
        return quant_config(section)

    def check(self, config, recipe) -> None:
        check_distillation(config, recipe.teacher, recipe.distillation)
        changes_model_first = any(section for name, section in recipe.technique_sections().items()
                                  if name != self.name) or recipe.student_layers is not None
        if getattr(config, "fallback_to_ptq", False) and changes_model_first and not recipe.standalone_sections():
            raise ValueError(
                "quant.int8.fallback_to_ptq quantizes the starting model as it is, but this recipe changes it first "
                "(another technique or student_layers), so the fallback would ship an untrained model. Run those "
                "first and quantize their output, or drop fallback_to_ptq (the combined pipeline does the former).")

    def prepare(self, model, config, context: TrainContext) -> Prepared:
        return Prepared(model, prepare(model, config))

    def wants_training_texts(self, config) -> bool:
        return True

    def exporter(self, config, context: ExportContext):
        return exporter(config, context.tokenizer, context.texts, context.max_length, context.mobile,
                        context.target_platform, vocabulary_texts=context.vocabulary_texts,
                        fuse_attention=context.fuse_attention)

    def keeps_start_model(self, config) -> bool:
        return bool(getattr(config, "fallback_to_ptq", False))

    def export_candidates(self, config) -> dict:
        """The configs whose exports the held-out split chooses between (name -> (config, from the start model))."""
        if not self.keeps_start_model(config):
            return {}
        return {"qat": (config, False), "ptq": (replace(config, mode="ptq", fallback_to_ptq=False), True)}

    def plan_options(self) -> list[PlanOption]:
        """For `compact compress`: int8 first by PTQ (no training); if the held-out drop is too large, QAT, with PTQ
        offered beside it so the held-out split decides between them (the rule earlier runs taught: neither wins
        everywhere). Binary weights last, and only on models of 5 layers or more: on SST-2 binary cost 4.4 points at
        3 layers and 2.5-2.9 at 5-6 (docs/combined.md)."""
        qat = PlanOption("int8 QAT (held-out chooses QAT or PTQ)",
                         {"int8": {"mode": "qat", "weights": "per_channel", "fallback_to_ptq": True}},
                         {"protocol": {"epochs": 1, "learning_rate": 2.0e-5},
                          "distillation": {"temperature": 1.0, "task_weight": 1.0, "logits_weight": 1.0,
                                           "hidden_weight": 1.0}}, 0.3, own_step=True)
        ptq = PlanOption("int8 PTQ", {"int8": {"mode": "ptq", "weights": "per_channel"}}, {}, 0.5, trains=False,
                         escalation=qat)
        binary_section = {"binary": {"weights": "per_channel", "activation_bits": 8, "embedding_bits": 1}}
        binary_stage = {"protocol": {"epochs": 2, "learning_rate": 2.0e-4, "weight_decay": 0.0},
                        "distillation": {"temperature": 1.0, "task_weight": 1.0, "logits_weight": 1.0,
                                         "hidden_weight": 1.0, "attention_weight": 1.0, "attention_loss": "relation"}}
        # binary weights recover by distillation: when the drop is too large, the same shape trained twice as long
        longer = PlanOption("binary weights (W1A8, 1-bit embeddings), trained 2x", binary_section, binary_stage, 2.7,
                            min_layers=5, train_factor=2.0)
        binary = PlanOption("binary weights (W1A8, 1-bit embeddings)", binary_section, binary_stage, 2.7,
                            min_layers=5, escalation=longer)
        return [ptq, binary]

    def add_commands(self, subparsers) -> None:
        add_quantize_command(subparsers)

    def card_line(self, result: dict) -> str:
        config = result.get("quant", {}).get("config")
        if not config:
            return ""
        if "activation_bits" in config:  # BinaryConfig
            return (f"binary weights (W1A{config['activation_bits']}, {config['weights'].replace('_', '-')} "
                    f"{config['weight_scale']} scales, 1 bit per weight, {config['embedding_bits']}-bit word "
                    f"embeddings{', trimmed vocabulary' if config['trim_vocabulary'] else ''}; two-stage distillation)")
        how = "quantization-aware training" if config["mode"] == "qat" else "post-training quantization"
        choice = result.get(f"{self.name}_choice")
        if choice:  # the held-out split chose: say so, and by how much
            scores = {name: 100 * choice["heldout"][name][choice["metric"]] for name in choice["heldout"]}
            other = next(name for name in scores if name != choice["shipped"])
            how += (f", chosen over {other.upper()} on the held-out split ({choice['metric']} "
                    f"{scores[choice['shipped']]:.2f} vs {scores[other]:.2f})")
        return (f"int8 by {how} ({config['weights'].replace('_', '-')} weights, {config['activations']} activations, "
                f"{config['embedding_bits']}-bit word embeddings"
                f"{', trimmed vocabulary' if config['trim_vocabulary'] else ''})")


TECHNIQUE = register(Quantization())
__all__ = ["BinaryConfig", "Int8Config", "Quantization", "TECHNIQUE"]
