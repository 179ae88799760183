"""Knowledge distillation between CompactBert models, as the compression papers use it.

- logits: soft cross-entropy against the teacher's temperature-softened distribution, times T^2 so gradients keep
  their scale (Hinton et al. 2015; DistilBERT, TinyBERT's prediction layer); MSE for regression (STS-B).
- hidden states: MSE between mapped layers (TinyBERT), through a learned linear projection when the student's
  hidden size differs from the teacher's.
- attention: MSE between attention distributions of mapped layers when head counts match (TinyBERT), or
  MiniLMv2's self-attention relations (query-query, key-key, value-value, split into `relation_heads` relation
  heads), which compare models with different head counts and head sizes.
- a student that dropped tokens: the teacher's states are gathered at the positions the student kept.

Layer maps count hidden states as transformers does: 0 is the embedding output, i is layer i's output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .config_section import ConfigSection

DISTILLATION_VERSION = 1


@dataclass
class DistillationConfig(ConfigSection):
    """What the student learns from the teacher; the weights of all terms (0 switches a term off)."""

    temperature: float = 1.0
    task_weight: float = 1.0  # the student's own loss on the gold labels
    logits_weight: float = 1.0
    hidden_weight: float = 0.0
    attention_weight: float = 0.0
    attention_loss: Literal["mse", "relation"] = "relation"
    relation_heads: int | None = None  # MiniLMv2 relation heads; None: the teacher's head count when it divides both
    layer_map: list[int] | None = None  # teacher hidden-state index for each student hidden state; None: uniform
    version: int = field(default=DISTILLATION_VERSION)

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}.")
        weights = {k: getattr(self, k) for k in ("task_weight", "logits_weight", "hidden_weight", "attention_weight")}
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ValueError(f"loss weights must be >= 0 and not all 0, got {weights}.")
        if self.attention_loss not in ("mse", "relation"):
            raise ValueError(f"attention_loss must be 'mse' or 'relation', got {self.attention_loss!r}.")
        if self.relation_heads is not None and self.relation_heads <= 0:
            raise ValueError(f"relation_heads must be positive or null, got {self.relation_heads}.")
        self.check_version(DISTILLATION_VERSION)

    @property
    def needs_hidden_states(self) -> bool:
        return self.hidden_weight > 0

    @property
    def needs_attentions(self) -> bool:
        return self.attention_weight > 0 and self.attention_loss == "mse"



def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Student hidden state i <- teacher hidden state i * (teacher_layers / student_layers), as TinyBERT maps them
    (embeddings to embeddings, last layer to last layer)."""
    if teacher_layers % student_layers:
        step = teacher_layers / student_layers
        return [round(i * step) for i in range(student_layers + 1)]
    return [i * (teacher_layers // student_layers) for i in range(student_layers + 1)]


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """-sum p_teacher log p_student at temperature T, times T^2; mean over the batch."""
    teacher = F.softmax(teacher_logits / temperature, dim=-1)
    return -(teacher * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean() * temperature**2


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """MSE over real tokens only: (B, T, H) states, (B, T) mask."""
    squared = (student - teacher).pow(2).mean(-1)  # (B, T)
    if mask is None:
        return squared.mean()
    mask = mask.to(squared.dtype)
    return (squared * mask).sum() / mask.sum().clamp(min=1)


def gather_tokens(states: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    """The rows of (B, T, ...) `states` at (B, k) token positions `kept` (a pruned student's surviving tokens)."""
    if kept is None:
        return states
    index = kept.reshape(*kept.shape, *([1] * (states.dim() - 2))).expand(*kept.shape, *states.shape[2:])
    return torch.gather(states, 1, index)


def relation_kl(student: torch.Tensor, teacher: torch.Tensor, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """MiniLMv2 relation loss for one of Q, K, V: (B, T, d) vectors of each model, split into `heads` relation heads;
    KL(teacher relation || student relation), averaged over relation heads and real query tokens."""

    def relation(x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        x = x.view(B, T, heads, d // heads).transpose(1, 2)  # (B, R, T, d/R)
        scores = x @ x.transpose(-2, -1) / math.sqrt(d // heads)  # (B, R, T, T)
        if mask is not None:
            scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
        return F.log_softmax(scores, dim=-1)

    student_rel, teacher_rel = relation(student), relation(teacher)
    kl = (teacher_rel.exp() * (teacher_rel - student_rel)).sum(-1)  # (B, R, T)
    if mask is None:
        return kl.mean()
    weights = mask[:, None, :].to(kl.dtype).expand_as(kl)
    return (kl * weights).sum() / weights.sum().clamp(min=1)


def pick_relation_heads(student_width: int, teacher_width: int, teacher_heads: int, requested: int | None) -> int:
    heads = requested or (teacher_heads if student_width % teacher_heads == 0 and teacher_width % teacher_heads == 0
                          else math.gcd(student_width, teacher_width))
    if student_width % heads or teacher_width % heads:
        raise ValueError(f"relation_heads={heads} must divide the attention widths of student ({student_width}) and "
                         f"teacher ({teacher_width}); choose a common divisor such as {math.gcd(student_width, teacher_width)}.")
    return heads


class Distiller(nn.Module):
    """The distillation terms between one student and one teacher, and the projections they train.

    The relation loss reads queries, keys and values through forward hooks on the student's last layer and on the
    teacher layer mapped to it (MiniLMv2 distils one layer's relations).
    """

    def __init__(self, config: DistillationConfig, student: nn.Module, teacher: nn.Module):
        super().__init__()
        self.config = config
        s_base, t_base = student.base_model, teacher.base_model
        s_cfg, t_cfg = student.config, teacher.config
        self.layer_map = config.layer_map or uniform_layer_map(s_cfg.num_hidden_layers, t_cfg.num_hidden_layers)
        if len(self.layer_map) != s_cfg.num_hidden_layers + 1 or not all(
            0 <= t <= t_cfg.num_hidden_layers for t in self.layer_map
        ):
            raise ValueError(
                f"layer_map needs one teacher hidden-state index (0..{t_cfg.num_hidden_layers}) for each of the "
                f"student's {s_cfg.num_hidden_layers + 1} hidden states (embeddings + layers), got {self.layer_map}."
            )
        # TinyBERT's W_h: one shared projection from the student's hidden size to the teacher's
        self.projection = (nn.Linear(s_cfg.hidden_size, t_cfg.hidden_size, bias=False)
                           if config.hidden_weight > 0 and s_cfg.hidden_size != t_cfg.hidden_size else None)
        if config.needs_attentions:
            for s, t in zip(range(1, s_cfg.num_hidden_layers + 1), self.layer_map[1:]):
                if t > 0 and s_cfg.num_heads_per_layer[s - 1] != t_cfg.num_heads_per_layer[t - 1]:
                    raise ValueError(
                        f"attention_loss='mse' compares attention maps head by head, but student layer {s} has "
                        f"{s_cfg.num_heads_per_layer[s - 1]} heads and teacher layer {t} has "
                        f"{t_cfg.num_heads_per_layer[t - 1]}; use attention_loss='relation' (MiniLMv2)."
                    )
        self._captured: dict[str, dict[str, torch.Tensor]] = {"student": {}, "teacher": {}}
        self._hooks = []
        if config.attention_weight > 0 and config.attention_loss == "relation":
            s_attn = s_base.layers[-1].attention
            t_layer = self.layer_map[-1]
            if t_layer == 0:
                raise ValueError("the relation loss needs the student's last layer mapped to a teacher layer, not the "
                                 "embeddings (layer_map[-1] = 0).")
            t_attn = t_base.layers[t_layer - 1].attention
            self.relation_heads = pick_relation_heads(s_attn.query.out_features, t_attn.query.out_features,
                                                      t_attn.num_heads, config.relation_heads)
            for who, attention in (("student", s_attn), ("teacher", t_attn)):
                for name in ("query", "key", "value"):
                    self._hooks.append(getattr(attention, name).register_forward_hook(self._capture(who, name)))

    def _capture(self, who: str, name: str):
        def hook(module, args, output):
            self._captured[who][name] = output  # (B*T, nh*hs), token-major
        return hook

    def losses(self, student_out, teacher_out, attention_mask: torch.Tensor,
               kept: list[torch.Tensor | None] | None = None, skip: set[str] = frozenset(),
               kept_masks: list[torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
        """Unweighted distillation terms. attention_mask: (B, T), 1 for real tokens. `kept[i]`: the (B, k) token
        positions the student's hidden state i kept (None when it kept all), for students that drop tokens;
        `kept_masks[i]`: which of those are real kept tokens (default: the input mask at those positions).
        skip: terms switched off at this step (a hook's term_weights)."""
        cfg, terms = self.config, {}
        if cfg.logits_weight > 0 and getattr(student_out, "logits", None) is not None and "logits" not in skip:
            s_logits, t_logits = student_out.logits, teacher_out.logits.detach()
            terms["logits"] = (F.mse_loss(s_logits, t_logits) if s_logits.shape[-1] == 1
                               else soft_cross_entropy(s_logits, t_logits, cfg.temperature))
        kept = kept or [None] * len(self.layer_map)
        kept_masks = kept_masks or [None] * len(kept)
        masks = [gather_tokens(attention_mask, k) if m is None else m for k, m in zip(kept, kept_masks)]
        if cfg.hidden_weight > 0 and "hidden" not in skip:
            total = 0.0
            for s_index, t_index in enumerate(self.layer_map):
                student_states = student_out.hidden_states[s_index]
                if self.projection is not None:
                    student_states = self.projection(student_states)
                teacher_states = gather_tokens(teacher_out.hidden_states[t_index].detach(), kept[s_index])
                total = total + masked_mse(student_states, teacher_states, masks[s_index])
            terms["hidden"] = total / len(self.layer_map)
        if cfg.attention_weight > 0 and "attention" not in skip:
            terms["attention"] = (self._attention_mse(student_out, teacher_out, masks, kept)
                                  if cfg.attention_loss == "mse" else self._relations(masks[-1], kept[-1]))
        return terms

    def weight(self, term: str) -> float:
        return {"logits": self.config.logits_weight, "hidden": self.config.hidden_weight,
                "attention": self.config.attention_weight}[term]

    def _attention_mse(self, student_out, teacher_out, masks, kept) -> torch.Tensor:
        total, pairs = 0.0, 0
        for s_layer, t_index in enumerate(self.layer_map[1:], start=1):
            if t_index == 0:
                continue
            student_probs = student_out.attentions[s_layer - 1]  # (B, nh, Tq, Tk)
            teacher_probs = teacher_out.attentions[t_index - 1].detach()
            if kept[s_layer] is not None:  # keep the rows and columns of the student's surviving tokens
                teacher_probs = gather_tokens(teacher_probs.transpose(1, 2), kept[s_layer]).transpose(1, 2)
                teacher_probs = torch.gather(teacher_probs, 3, kept[s_layer][:, None, None, :].expand(
                    -1, teacher_probs.shape[1], teacher_probs.shape[2], -1))
            mask = masks[s_layer].to(student_probs.dtype)
            diff = (student_probs - teacher_probs).pow(2).sum(-1).mean(1)  # (B, Tq)
            total = total + (diff * mask).sum() / mask.sum().clamp(min=1)
            pairs += 1
        return total / max(pairs, 1)

    def _relations(self, mask, kept_last) -> torch.Tensor:
        batch, total = mask.shape[0], 0.0
        for name in ("query", "key", "value"):
            student = self._captured["student"][name]
            teacher = self._captured["teacher"][name].detach()
            student = student.view(batch, -1, student.shape[-1])  # (B, T_student, d_s)
            teacher = gather_tokens(teacher.view(batch, -1, teacher.shape[-1]), kept_last)  # (B, T_student, d_t)
            total = total + relation_kl(student, teacher, self.relation_heads, mask)
        return total / 3
