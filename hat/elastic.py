"""The elastic SuperTransformer: every SubTransformer of a space runs on one set of shared weights.

    super_model = rewire(finetuned, importance(finetuned, batches))    # important heads/neurons/channels first
    supernet = SuperTransformer(super_model, space)
    supernet(**batch, sub=space.smallest())                            # runs on front slices of the shared weights
    CompactTrainer(model=supernet, teacher_model=finetuned, hooks=[SandwichHook(space)], ...)  # train them all

Weight sharing is by front slices, as in HAT (Wang et al. 2020): a SubTransformer with h hidden channels, n heads and
f FFN neurons in a layer uses the first h, n and f of them. DynaBERT (Hou et al. 2020) first reorders heads and
neurons by importance ("network rewiring") so that those front slices are the ones that matter; we do the same for
hidden channels. Rewiring permutes weights, so the rewired model computes exactly what the original did.

A SubTransformer runs through the ordinary CompactBert code: a parameter-free skeleton of its config (built on the
meta device) is called with views of the shared weights (`torch.func.functional_call`), so nothing is copied,
gradients reach the shared weights, and it computes what `extract` later produces as a standalone model.
"""

from __future__ import annotations

import random
from collections import OrderedDict

import torch
from torch import nn
from torch.func import functional_call

from compact_nlp.modeling import CompactBertForSequenceClassification
from compact_nlp.shrink import take
from compact_nlp.hooks import CompactHook

from .space import SearchSpace, SubTransformer


def _linear_taylor(linear: nn.Linear, groups: int) -> torch.Tensor:
    """|sum of w * dL/dw| over each of `groups` equal blocks of the layer's input columns: the first-order estimate
    of the loss change when that block's input is zeroed (Molchanov et al. 2017; Michel et al. 2019's head mask
    gradient, which DynaBERT ranks heads and neurons by)."""
    contribution = (linear.weight * linear.weight.grad).sum(0)  # (in,)
    return contribution.view(groups, -1).sum(-1)


def importance(model: CompactBertForSequenceClassification, batches) -> dict:
    """Rank heads, FFN neurons and hidden channels by first-order Taylor importance on labelled task batches (train
    data, never dev). The absolute value is taken per batch and summed, as Michel et al. accumulate it.

    Returns {"heads": [(heads,) per layer], "ffn": [(neurons,) per layer], "hidden": (hidden,)}.
    """
    base = model.compact_bert
    heads = [torch.zeros(layer.attention.num_heads) for layer in base.layers]
    ffn = [torch.zeros(layer.ffn_in.out_features) for layer in base.layers]
    hidden = torch.zeros(model.config.hidden_size)
    norms = [base.embeddings.layer_norm] if base.embeddings.projection is None else []
    norms += [n for layer in base.layers for n in (layer.attention_norm, layer.ffn_norm)]
    was_training = model.training
    model.eval()  # no dropout: rank what the model computes
    try:
        for batch in batches:
            model.zero_grad(set_to_none=False)
            model(**batch).loss.backward()
            with torch.no_grad():
                for i, layer in enumerate(base.layers):
                    heads[i] += _linear_taylor(layer.attention.out_proj, layer.attention.num_heads).abs()
                    ffn[i] += _linear_taylor(layer.ffn_out, layer.ffn_out.in_features).abs()
                # a hidden channel leaves the residual stream when every LayerNorm's scale and shift on it are zero
                hidden += sum(n.weight * n.weight.grad + n.bias * n.bias.grad for n in norms).abs()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {"heads": heads, "ffn": ffn, "hidden": hidden}


def rewire(model: CompactBertForSequenceClassification, ranks: dict) -> CompactBertForSequenceClassification:
    """A copy of `model` with heads, FFN neurons and hidden channels in order of decreasing importance (DynaBERT's
    network rewiring). It computes the same function; only the order of the weights changes."""
    def order(scores: torch.Tensor) -> list[int]:
        return torch.argsort(scores, descending=True, stable=True).tolist()

    return take(model, heads=[order(s) for s in ranks["heads"]], ffn=[order(s) for s in ranks["ffn"]],
                hidden=order(ranks["hidden"]))


class SuperTransformer(nn.Module):
    """A fine-tuned (and rewired) CompactBert whose SubTransformers run on front slices of its weights.

    `forward(..., sub=SubTransformer)` runs that SubTransformer; without `sub` it runs the active one (set by
    `SandwichHook` during training, or with `activate`), or the whole model when none is active.
    """

    def __init__(self, model: CompactBertForSequenceClassification, space: SearchSpace, skeleton_cache: int = 64):
        super().__init__()
        space.check_model(model.config)
        self.model = model
        self.space = space
        self.active: SubTransformer | None = None
        self._skeletons: OrderedDict[SubTransformer, nn.Module] = OrderedDict()
        self._cache_size = skeleton_cache

    # Trainer and the distiller read these from the model they are given
    @property
    def config(self):
        return self.model.config

    @property
    def base_model(self):
        return self.model.base_model

    def activate(self, sub: SubTransformer | None) -> None:
        if sub is not None:
            self.space.check(sub)
        self.active = sub

    def sub_config(self, sub: SubTransformer):
        """The CompactBert config of a SubTransformer: the shared model's, with its widths."""
        config = self.model.config.__class__.from_dict(self.model.config.to_dict())
        config.hidden_size = sub.hidden
        config.num_heads_per_layer = list(sub.heads)
        config.intermediate_size_per_layer = list(sub.ffn)
        config.search = {"space": self.space.to_dict(), "subtransformer": sub.to_dict(),
                         "layers": self.space.layers_for(sub.depth)}
        config.validate()
        return config

    def _skeleton(self, sub: SubTransformer) -> nn.Module:
        if sub not in self._skeletons:
            with torch.device("meta"):
                self._skeletons[sub] = type(self.model)(self.sub_config(sub))
            if len(self._skeletons) > self._cache_size:
                self._skeletons.popitem(last=False)
        self._skeletons.move_to_end(sub)
        return self._skeletons[sub]

    def shared_weights(self, sub: SubTransformer) -> dict[str, torch.Tensor]:
        """The SubTransformer's parameters as views (front slices) of the shared weights, named as in its skeleton."""
        skeleton = self._skeleton(sub)
        layers = self.space.layers_for(sub.depth)
        shared = dict(self.model.named_parameters())
        views = {}
        for name, param in skeleton.named_parameters():
            source = name
            if ".layers." in name:  # sub layer j runs on shared layer layers[j]
                prefix, rest = name.split(".layers.", 1)
                j, rest = rest.split(".", 1)
                source = f"{prefix}.layers.{layers[int(j)]}.{rest}"
            views[name] = shared[source][tuple(slice(0, n) for n in param.shape)]
        return views

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, sub=None, **kwargs):
        sub = sub if sub is not None else self.active
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      labels=labels, **kwargs)
        if sub is None:
            return self.model(**inputs)
        self.space.check(sub)
        skeleton = self._skeleton(sub).train(self.training)
        return functional_call(skeleton, self.shared_weights(sub), args=(), kwargs=inputs, strict=True)


class SandwichHook(CompactHook):
    """Train every SubTransformer at once with the sandwich rule (Yu & Huang 2019, as BigNAS and DynaBERT-style
    supernets use it): each optimizer step accumulates the gradients of the largest, the smallest and `random`
    randomly drawn SubTransformers, one per gradient-accumulation micro-batch, so set gradient_accumulation_steps to
    a multiple of `len(hook)`. The draws are seeded by the global step, so a resumed run draws the same ones."""

    def __init__(self, space: SearchSpace, random_subs: int = 1, seed: int = 0):
        self.space, self.random_subs, self.seed = space, random_subs, seed
        self._sandwich: list[SubTransformer] = []
        self._turn = 0

    def __len__(self) -> int:
        return 2 + self.random_subs

    def sandwich(self, step: int) -> list[SubTransformer]:
        rng = random.Random(f"{self.seed}-{step}")
        return [self.space.largest(), self.space.smallest(), *(self.space.sample(rng) for _ in range(self.random_subs))]

    def on_train_begin(self, args, state, control, **kwargs):
        if args.gradient_accumulation_steps % len(self):
            raise ValueError(
                f"the sandwich rule trains {len(self)} SubTransformers per optimizer step, one per micro-batch: set "
                f"gradient_accumulation_steps to a multiple of {len(self)} (got {args.gradient_accumulation_steps}) "
                "and divide per_device_train_batch_size accordingly.")

    def _activate(self, model) -> None:
        model.activate(self._sandwich[self._turn % len(self._sandwich)])

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._sandwich, self._turn = self.sandwich(state.global_step), 0
        self._activate(model)

    def on_substep_end(self, args, state, control, model=None, **kwargs):
        self._turn += 1
        self._activate(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        model.activate(None)  # evaluation and checkpoints between steps see the whole model

    on_train_end = on_step_end
