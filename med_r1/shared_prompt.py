"""Shared-prompt GRPO passes: each prompt and its images go through the model once per group, not once per rollout.

GRPO scores G completions of one prompt. TRL builds each of the G rows from scratch, so every log-prob pass (old
policy, reference, policy with gradients) re-encodes the image G times and re-reads the prompt G times. Here the rows
of a chunk that share a prompt (same prompt token ids, same images) become **one packed sequence per group**:

    prompt[:-1] | prompt[-1] completion_1 | prompt[-1] completion_2 | ... | prompt[-1] completion_G

attended segment by segment (`med_r1.segment_attention`: each segment sees the shared prompt and itself, causally)
with explicit M-RoPE positions copied from the rows the segments stand for, so every completion token is scored with
exactly the context and the position it had in its own row. Each segment starts with its own copy of the prompt's
last token: the first completion token's log-prob comes from that position, as it would from the prompt's last
position in the row. The vision tower runs once per distinct image and the language model reads each prompt once;
autograd sums the G completions' gradients into the shared prompt computation, so LoRA, full fine-tuning and an
unfrozen vision tower train as before.

Why a packed sequence rather than a prefill whose key/value cache is expanded over the group: the packed form is a
single ordinary forward of the (possibly DDP/DeepSpeed-wrapped) model, so gradient checkpointing (TRL's default; it
drops caches in training mode), the wrappers' gradient hooks and TRL's fused log-prob head all work unchanged. The
attention costs G·C·(P + C) score entries per group (prompt P, completions C), linear in the packed length, with
whatever attention implementation the model was loaded with (eager, sdpa, flash-attention, flex).

Supported: Qwen2-VL, Qwen2.5-VL and Qwen3-VL (M-RoPE families whose forward takes explicit 3D positions) without
sliding-window layers. Anything else keeps TRL's path (`unsupported_reason` says why). The generation and image
processor sharing is `med_r1.shared_inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from med_r1.config import ModelConfig
from med_r1.model import resolve_model_path
from med_r1.segment_attention import WRAPPABLE, Layout

if TYPE_CHECKING:
    import torch

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
SUPPORTED_ATTENTION = WRAPPABLE
IGNORE = -100


def unsupported_reason(config, attention: str | None = None) -> str | None:
    """Why the shared-prompt passes cannot serve a model with this config (None when they can). `attention` is the
    attention implementation in use (default: the text config's)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}"
    text = config.get_text_config()
    attention = attention or text._attn_implementation or "eager"
    if attention not in SUPPORTED_ATTENTION:
        return (
            f"attn_implementation {attention!r} is not one the segment attention can stand in front of "
            f"({', '.join(SUPPORTED_ATTENTION)})"
        )
    if getattr(text, "use_sliding_window", False) or "sliding_attention" in (getattr(text, "layer_types", None) or ()):
        return "the text model has sliding-window layers, which the segment attention does not implement"
    return None


def plan_note(model: ModelConfig) -> str:
    """Whether the shared-prompt passes will serve this model, read from its config.json (no weights)."""
    from transformers import AutoConfig  # lazy: transformers takes seconds to import

    if not model.share_prompt:
        return "off (model.share_prompt: false)"
    trust = {"trust_remote_code": True} if model.trust_remote_code else {}
    config = AutoConfig.from_pretrained(resolve_model_path(model.name_or_path), **trust)
    reason = unsupported_reason(config, model.attn_implementation or "sdpa")  # transformers' default for Qwen-VL
    return f"off, TRL's unshared passes: {reason}" if reason else "on (each prompt and its images once per group)"


# --------------------------------------------------------------------------------------------------------------------
# Which rows share a prompt
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Rows:
    """One chunk of TRL's rows (left-padded prompt ++ right-padded completion) and where each row's images are."""

    input_ids: torch.Tensor  # (R, L)
    attention_mask: torch.Tensor  # (R, L)
    logits_to_keep: int  # completion width K; the prompt is the first L - K columns
    pixel_values: torch.Tensor | None  # (patches of all the rows' images, D)
    image_grid_thw: torch.Tensor | None  # (images, 3)
    num_images: list[int] | None  # images per row
    mm_token_type_ids: torch.Tensor | None  # (R, L)

    @property
    def prompt_width(self) -> int:
        return self.input_ids.size(1) - self.logits_to_keep

    def select(self, start: int, end: int) -> Rows:
        """Rows start..end-1 with their images (how TRL slices a chunk)."""
        image_spans, pixel_spans = self.image_spans()
        pixel_values, image_grid_thw = self.pixel_values, self.image_grid_thw
        if image_grid_thw is not None and self.num_images is not None:
            first, last = image_spans[start].start, image_spans[end - 1].stop
            image_grid_thw = image_grid_thw[first:last]
            if pixel_values is not None:
                pixel_values = pixel_values[pixel_spans[start].start : pixel_spans[end - 1].stop]
        return Rows(
            self.input_ids[start:end],
            self.attention_mask[start:end],
            self.logits_to_keep,
            pixel_values,
            image_grid_thw,
            self.num_images[start:end] if self.num_images is not None else None,
            self.mm_token_type_ids[start:end] if self.mm_token_type_ids is not None else None,
        )

    def as_kwargs(self) -> dict:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "pixel_values": self.pixel_values,
            "image_grid_thw": self.image_grid_thw,
            "num_images": self.num_images,
            "mm_token_type_ids": self.mm_token_type_ids,
        }

    def image_spans(self) -> tuple[list[range], list[range]]:
        """Per row: the range of its images in `image_grid_thw` and of its patches in `pixel_values`."""
        rows = self.input_ids.size(0)
        if self.image_grid_thw is None or not self.num_images:
            return [range(0)] * rows, [range(0)] * rows
        patches = self.image_grid_thw.prod(-1).tolist()
        images, pixels, i, p = [], [], 0, 0
        for n in self.num_images:
            count = sum(patches[i : i + n])
            images.append(range(i, i + n))
            pixels.append(range(p, p + count))
            i, p = i + n, p + count
        return images, pixels


def well_formed(rows: Rows) -> bool:
    """Left-padded prompts ending in a real token and completions that are a run of real tokens then padding (what
    TRL builds). Anything else is left to TRL's own path."""

    mask = rows.attention_mask.bool()
    prompt, completion = mask[:, : rows.prompt_width], mask[:, rows.prompt_width :]
    if rows.prompt_width == 0 or not bool(prompt[:, -1].all()):
        return False
    if rows.mm_token_type_ids is not None and bool(rows.mm_token_type_ids[:, rows.prompt_width - 1].any()):
        return False  # a prompt ending in an image token: each segment would need its own copy of the image
    left_padded = bool((prompt[:, 1:].int() >= prompt[:, :-1].int()).all())
    right_padded = bool((completion[:, 1:].int() <= completion[:, :-1].int()).all()) if completion.size(1) else True
    return left_padded and right_padded


def find_groups(rows: Rows) -> list[list[int]]:
    """Rows with the same prompt tokens and the same images (compared exactly), in order of first appearance."""
    width = rows.prompt_width
    image_spans, pixel_spans = rows.image_spans()
    grids = rows.image_grid_thw.tolist() if rows.image_grid_thw is not None else []
    groups: list[list[int]] = []
    by_key: dict[tuple, list[int]] = {}  # key -> indices into `groups` whose representative has that key
    for r in range(rows.input_ids.size(0)):
        tokens = rows.input_ids[r, :width][rows.attention_mask[r, :width].bool()]
        key = (tuple(tokens.tolist()), tuple(tuple(grids[i]) for i in image_spans[r]))
        for g in by_key.get(key, []):
            first = groups[g][0]
            if _same_pixels(rows, pixel_spans[first], pixel_spans[r]):
                groups[g].append(r)
                break
        else:
            by_key.setdefault(key, []).append(len(groups))
            groups.append([r])
    return groups


def _same_pixels(rows: Rows, a: range, b: range) -> bool:
    import torch

    if len(a) != len(b):
        return False
    if len(a) == 0:
        return True
    return torch.equal(rows.pixel_values[a.start : a.stop], rows.pixel_values[b.start : b.stop])


# --------------------------------------------------------------------------------------------------------------------
# Packing a chunk into one sequence per group
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Packed:
    input_ids: torch.Tensor  # (groups, Lp)
    position_ids: torch.Tensor  # (3, groups, Lp)
    shift_labels: torch.Tensor  # (groups, Lp): the token each position predicts, IGNORE elsewhere
    mm_token_type_ids: torch.Tensor | None  # (groups, Lp)
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    source: tuple[torch.Tensor, torch.Tensor]  # packed (group, position) of each scored token ...
    target: tuple[torch.Tensor, torch.Tensor]  # ... and its (row, completion column) in TRL's layout
    spans: list[tuple[int, int, int]]  # (group, start, length) of each segment, in packed order
    prompt_lengths: list[int]  # shared prompt tokens at the start of each group's row

    def layout(self, text_config) -> Layout:
        """The segment attention's indices for this packing (`med_r1.segment_attention`)."""
        return Layout.build(
            self.spans, self.prompt_lengths, self.input_ids.size(1), text_config, self.input_ids.device
        )


def row_positions(backbone, rows: Rows) -> torch.Tensor:
    """The (3, R, L) M-RoPE positions the model gives each row in an ordinary forward: the backbone's own
    `get_rope_index` when the rows carry images (it reads no weights and keeps no state), else plain column
    indices (what the text model falls back to)."""
    import torch

    if rows.image_grid_thw is not None and rows.mm_token_type_ids is not None:
        positions, _ = backbone.get_rope_index(
            input_ids=rows.input_ids,
            mm_token_type_ids=rows.mm_token_type_ids,
            image_grid_thw=rows.image_grid_thw,
            attention_mask=rows.attention_mask,
        )
        return positions
    columns = torch.arange(rows.input_ids.size(1), device=rows.input_ids.device)
    return columns.view(1, 1, -1).expand(3, rows.input_ids.size(0), -1)


def pack(rows: Rows, groups: list[list[int]], positions: torch.Tensor, pad_token_id: int) -> Packed:
    import torch

    width, mask = rows.prompt_width, rows.attention_mask.bool()
    device = rows.input_ids.device
    image_spans, pixel_spans = rows.image_spans()
    lengths = mask[:, width:].sum(-1).tolist()
    prompt_columns = [torch.nonzero(mask[g[0], :width]).flatten() for g in groups]
    sizes = [len(cols) - 1 + sum(1 + lengths[r] for r in g) for g, cols in zip(groups, prompt_columns, strict=True)]
    longest = max(sizes)

    ids = torch.full((len(groups), longest), pad_token_id, dtype=rows.input_ids.dtype, device=device)
    packed_positions = torch.zeros((3, len(groups), longest), dtype=positions.dtype, device=device)
    labels = torch.full((len(groups), longest), IGNORE, dtype=rows.input_ids.dtype, device=device)
    mm = None if rows.mm_token_type_ids is None else torch.zeros_like(ids, dtype=rows.mm_token_type_ids.dtype)
    src_g, src_p, dst_r, dst_c = [], [], [], []
    spans, prompt_lengths = [], []
    image_rows, pixel_rows = [], []
    for g, (members, cols) in enumerate(zip(groups, prompt_columns, strict=True)):
        first = members[0]
        shared = cols[:-1]
        n = len(shared)
        ids[g, :n] = rows.input_ids[first, shared]
        prompt_lengths.append(n)
        packed_positions[:, g, :n] = positions[:, first, shared]
        if mm is not None:
            mm[g, :n] = rows.mm_token_type_ids[first, shared]
        image_rows.extend(image_spans[first])
        pixel_rows.extend(pixel_spans[first])
        start = n
        for r in members:
            own = torch.cat([cols[-1:], torch.arange(width, width + lengths[r], device=device)])
            end = start + len(own)
            ids[g, start:end] = rows.input_ids[r, own]
            spans.append((g, start, end - start))
            packed_positions[:, g, start:end] = positions[:, r, own]
            if mm is not None:
                mm[g, start:end] = rows.mm_token_type_ids[r, own]
            labels[g, start : end - 1] = rows.input_ids[r, own[1:]]
            src_g += [g] * lengths[r]
            src_p += range(start, end - 1)
            dst_r += [r] * lengths[r]
            dst_c += range(lengths[r])
            start = end

    def index(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    pixel_values = image_grid_thw = None
    if rows.pixel_values is not None and pixel_rows:
        pixel_values = rows.pixel_values[index(pixel_rows)]
        image_grid_thw = rows.image_grid_thw[index(image_rows)]
    return Packed(
        ids,
        packed_positions,
        labels,
        mm,
        pixel_values,
        image_grid_thw,
        (index(src_g), index(src_p)),
        (index(dst_r), index(dst_c)),
        spans,
        prompt_lengths,
    )


def worth_packing(rows: Rows, packed: Packed, text_config) -> bool:
    """Whether the packed chunk costs less than TRL's rows: linear layers scale with tokens, attention with (query,
    key) pairs (TRL: every row with every row position; segments: each prompt with itself, each segment slot with
    the longest prompt and its own segment). Vision savings are left out, so the estimate leans towards TRL's path."""
    hidden = text_config.hidden_size
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or hidden // heads
    kv = text_config.num_key_value_heads * head_dim
    per_layer = hidden * (2 * heads * head_dim + 2 * kv) + 3 * hidden * text_config.intermediate_size
    pair_cost = 4 * heads * head_dim / (2 * per_layer)  # one (query, key) pair in units of one token
    rows_count, length = rows.input_ids.shape
    trl = rows_count * length + pair_cost * rows_count * length**2
    groups, packed_length = packed.input_ids.shape
    prompt, segment = max(packed.prompt_lengths), max(n for _, _, n in packed.spans)
    pairs = groups * prompt**2 + len(packed.spans) * segment * (prompt + segment)
    ours = groups * packed_length + pair_cost * pairs
    return ours < trl


# --------------------------------------------------------------------------------------------------------------------
# Micro-batches that keep groups together
# --------------------------------------------------------------------------------------------------------------------


def regroup(micro_batches: list[dict], window: int) -> list[dict]:
    """TRL shuffles a generation batch row by row before splitting it into micro-batches, which scatters the G rows
    of a prompt over the gradient-accumulation steps and leaves little to share. Within each optimizer step (`window`
    consecutive micro-batches, whose rows TRL drew) this reorders the rows so a prompt's rows sit together, keeping
    TRL's random order of prompts; which rows each optimizer step sees is unchanged. Only valid for losses whose
    accumulated gradient does not depend on how a step's rows are split (the caller checks)."""
    import torch
    from trl.trainer.utils import split_pixel_values_by_grid, split_tensor_dict, unsplit_pixel_values_by_grid

    out = []
    for start in range(0, len(micro_batches), window):
        parts = [split_pixel_values_by_grid(b) for b in micro_batches[start : start + window]]
        merged = {}
        for key, first in parts[0].items():
            values = [p[key] for p in parts]
            if first is None or (isinstance(first, torch.Tensor) and first.ndim == 0):
                merged[key] = first
            elif isinstance(first, list):
                merged[key] = [x for v in values for x in v]
            else:
                merged[key] = torch.cat(values)
        order = _group_order(merged)
        permuted = {}
        for key, value in merged.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                permuted[key] = value[torch.tensor(order, device=value.device)]
            elif isinstance(value, list):
                permuted[key] = [value[i] for i in order]
            else:
                permuted[key] = value
        out += [unsplit_pixel_values_by_grid(b) for b in split_tensor_dict(permuted, len(parts))]
    return out


def _group_order(batch: dict) -> list[int]:
    """Row order with equal prompts adjacent, groups in order of first appearance. Keys need not be exact: a
    collision would only place two prompts side by side; sharing itself compares rows exactly."""

    ids, mask = batch["prompt_ids"], batch["prompt_mask"].bool()
    pixels = batch.get("pixel_values")
    first_seen: dict[tuple, int] = {}
    keys = []
    for r in range(ids.size(0)):
        key = tuple(ids[r][mask[r]].tolist())
        if isinstance(pixels, list) and pixels[r] is not None and pixels[r].numel():
            key += (pixels[r].shape[0], float(pixels[r].double().sum()), float(pixels[r].double().square().sum()))
        first_seen.setdefault(key, len(first_seen))
        keys.append(first_seen[key])
    return sorted(range(len(keys)), key=lambda r: keys[r])
