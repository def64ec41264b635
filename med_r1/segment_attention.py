"""Attention for a packed group (`med_r1.shared_prompt`), computed segment by segment, with memory linear in the packed
length and any base attention implementation.

A packed group is `prompt | segment_1 | ... | segment_G` (padding after the last). The prompt attends to itself
causally; segment k attends to the whole prompt and, causally, to itself. Rather than one (L, L) tree mask over the
packed row (quadratic in L, and something flash-attention kernels cannot take), the attention is computed in two
batched `scaled_dot_product_attention` calls: the prompts of all groups with a causal mask, and all segments of the
chunk at once, each with keys `[its prompt, itself]` and a (C, P + C) mask. Scores take G·C·(P + C) per group where
the tree mask took (P + G·C)²; on a GPU the fused kernels of `scaled_dot_product_attention` keep even that off the
memory. Grouped-query heads are folded into the query length, so keys and values are never repeated per head.

How it reaches the model: transformers' attention layers look their function up in `ALL_ATTENTION_FUNCTIONS` by the
config's `_attn_implementation` at every call. `install` puts a wrapper in front of the implementation the model uses
(eager, sdpa, flash-attention, flex); the wrapper is the original function unless the call carries a `Layout` under
the keyword `med_r1_segments` and comes from that layout's text layers. The keyword travels with the model's forward
keyword arguments down to every attention call (transformers passes them through), and it is kept by gradient
checkpointing's recompute, which replays the layer with the same arguments. Upgrade risk: transformers no longer
passing unknown forward keywords to the attention function, or looking the function up elsewhere; `Layout.calls`
counts the calls served, and the trainer raises if a forward served fewer than the model's text layers, so such a
change fails loudly instead of computing with the placeholder mask.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

KEYWORD = "med_r1_segments"
WRAPPABLE = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flash_attention_4", "flex_attention")


@dataclass
class Layout:
    """Where the prompt and the segments of each packed group are, as indices into the packed (groups, length) rows.
    Built once per forward; every layer reuses it."""

    config: object  # the text config of the layers this layout is for
    groups: int
    length: int  # packed length
    prompt_width: int  # longest shared prompt (P)
    segment_width: int  # longest segment (C)
    prompt_index: torch.Tensor  # flat (group * P + i) of each real prompt position in the prompt block's output ...
    prompt_target: torch.Tensor  # ... and its flat (group * length + i) in the packed rows
    segment_group: torch.Tensor  # (S,) the group of each segment
    segment_index: torch.Tensor  # (S * C,) flat packed position of each segment slot (clamped inside its segment)
    segment_valid: torch.Tensor  # (S * C,) whether the slot is a real token of its segment
    prompt_mask: torch.Tensor  # (1, 1, P, P) causal
    segment_mask: torch.Tensor  # (S, 1, C, P + C): the group's real prompt tokens, then causal over the segment
    calls: int = field(default=0)

    @classmethod
    def build(cls, spans: list[tuple[int, int, int]], prompt_lengths: list[int], length: int, config, device):
        """`spans`: (group, start, length) of every segment in packed order; `prompt_lengths`: shared prompt tokens
        per group (at the start of its row)."""
        import torch

        groups = len(prompt_lengths)
        width = max(prompt_lengths)
        seg_width = max(n for _, _, n in spans)
        group = torch.tensor([g for g, _, _ in spans], dtype=torch.long, device=device)
        start = torch.tensor([s for _, s, _ in spans], dtype=torch.long, device=device)
        size = torch.tensor([n for _, _, n in spans], dtype=torch.long, device=device)
        slot = torch.arange(seg_width, device=device)
        valid = slot[None, :] < size[:, None]
        offset = torch.minimum(slot[None, :], size[:, None] - 1)  # padding slots point inside their own segment
        index = (group * length + start)[:, None] + offset
        prompts = torch.tensor(prompt_lengths, dtype=torch.long, device=device)
        real_prompt = torch.arange(width, device=device)[None, :] < prompts[:, None]  # (groups, P)
        prompt_index = torch.nonzero(real_prompt.flatten()).flatten()
        rows, cols = prompt_index // max(width, 1), prompt_index % max(width, 1)
        causal_c = torch.ones(seg_width, seg_width, dtype=torch.bool, device=device).tril()
        segment_mask = torch.cat(
            [real_prompt[group][:, None, :].expand(-1, seg_width, -1), causal_c.expand(len(spans), -1, -1)], dim=-1
        )[:, None]
        return cls(
            config=config,
            groups=groups,
            length=length,
            prompt_width=width,
            segment_width=seg_width,
            prompt_index=prompt_index,
            prompt_target=rows * length + cols,
            segment_group=group,
            segment_index=index.flatten(),
            segment_valid=valid.flatten(),
            prompt_mask=torch.ones(width, width, dtype=torch.bool, device=device).tril()[None, None],
            segment_mask=segment_mask,
        )

    def placeholder_mask(self) -> torch.Tensor:
        """The attention mask to hand the model: 4D, so transformers builds none of its own (a prepared 4D mask is
        passed through as is), and an expanded single value, so it costs no memory. Only the wrapper reads it."""
        import torch

        one = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=self.prompt_mask.device)
        return one.expand(self.groups, 1, self.length, self.length)


def attention(layout: Layout, query, key, value, scaling: float | None, dropout: float) -> torch.Tensor:
    """(groups, length, heads, head_dim), as transformers' attention functions return; zeros at padding."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    groups, heads, length, dim = query.shape
    kv_heads = key.size(1)
    rep = heads // kv_heads
    p, c, s = layout.prompt_width, layout.segment_width, layout.segment_group.numel()

    def fold(q, width):  # (n, heads, width, d) -> (n, kv_heads, rep * width, d): heads sharing a key in one row block
        return q.reshape(q.size(0), kv_heads, rep * width, dim)

    def unfold(o, width):  # inverse of fold, then (n * width, heads, d)
        return o.reshape(o.size(0), heads, width, dim).transpose(1, 2).reshape(-1, heads, dim)

    def flat(x):  # (groups, h, length, d) -> (groups * length, h, d)
        return x.transpose(1, 2).reshape(groups * length, x.size(1), dim)

    out = query.new_zeros(groups * length, heads, dim)
    if p:
        mask = layout.prompt_mask.repeat(1, 1, rep, 1)
        prompt = sdpa(
            fold(query[:, :, :p], p), key[:, :, :p], value[:, :, :p], attn_mask=mask, dropout_p=dropout, scale=scaling
        )
        out = out.index_copy(0, layout.prompt_target, unfold(prompt, p)[layout.prompt_index])

    def segments(x):  # (groups, h, length, d) -> (S, h, C, d)
        return flat(x)[layout.segment_index].reshape(s, c, x.size(1), dim).transpose(1, 2)

    keys, values = segments(key), segments(value)
    if p:
        keys = torch.cat([key[:, :, :p].index_select(0, layout.segment_group), keys], dim=2)
        values = torch.cat([value[:, :, :p].index_select(0, layout.segment_group), values], dim=2)
    mask = layout.segment_mask if p else layout.segment_mask[..., p:]
    own = sdpa(
        fold(segments(query), c), keys, values, attn_mask=mask.repeat(1, 1, rep, 1), dropout_p=dropout, scale=scaling
    )
    valid = layout.segment_valid
    out = out.index_copy(0, layout.segment_index[valid], unfold(own, c)[valid])
    return out.reshape(groups, length, heads, dim)


_INSTALLED: set[str] = set()


def _eager_of(module):
    """The eager function of the module's own modeling file (what transformers falls back to for 'eager')."""
    function = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if function is None:
        raise RuntimeError(f"{type(module).__module__} defines no eager_attention_forward")
    return function


def install(implementation: str) -> None:
    """Put the segment wrapper in front of `implementation` in transformers' attention registry (idempotent). Without
    a `Layout` keyword the wrapper calls the original, so nothing else in the process changes."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if implementation in _INSTALLED:
        return
    if implementation not in WRAPPABLE:
        raise ValueError(f"no segment attention in front of {implementation!r}; one of {', '.join(WRAPPABLE)}")
    original = None if implementation == "eager" else ALL_ATTENTION_FUNCTIONS[implementation]
    _INSTALLED.add(implementation)

    def wrapper(module, query, key, value, attention_mask, **kwargs):
        layout = kwargs.pop(KEYWORD, None)
        if layout is None or getattr(module, "config", None) is not layout.config:
            function = original or _eager_of(module)
            return function(module, query, key, value, attention_mask, **kwargs)
        if kwargs.get("sliding_window") is not None:
            raise RuntimeError("segment attention has no sliding window (shared_prompt.unsupported_reason refuses it)")
        layout.calls += 1
        dropout = kwargs.get("dropout", 0.0) if module.training else 0.0
        return attention(layout, query, key, value, kwargs.get("scaling"), dropout), None

    ALL_ATTENTION_FUNCTIONS[implementation] = wrapper
