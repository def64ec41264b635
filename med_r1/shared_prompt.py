"""Shared-prompt GRPO passes: each prompt and its images go through the model once per group, not once per rollout.

GRPO scores G completions of one prompt. TRL builds each of the G rows from scratch, so every log-prob pass (old
policy, reference, policy with gradients) re-encodes the image G times and re-reads the prompt G times. Here the rows
of a chunk that share a prompt (same prompt token ids, same images) become **one packed sequence per group**:

    prompt[:-1] | prompt[-1] completion_1 | prompt[-1] completion_2 | ... | prompt[-1] completion_G

with a tree-shaped attention mask (each segment sees the shared prompt and itself, causally) and explicit M-RoPE
positions copied from the rows the segments stand for, so every completion token is scored with exactly the context
and the position it had in its own row. Each segment starts with its own copy of the prompt's last token: the first
completion token's log-prob comes from that position, as it would from the prompt's last position in the row. The
vision tower runs once per distinct image and the language model reads each prompt once; autograd sums the G
completions' gradients into the shared prompt computation, so LoRA, full fine-tuning and an unfrozen vision tower train
as before.

Why a packed sequence rather than a prefill whose key/value cache is expanded over the group: the packed form is a
single ordinary forward of the (possibly DDP/DeepSpeed-wrapped) model, so gradient checkpointing (TRL's default; it
drops caches in training mode), the wrappers' gradient hooks and TRL's fused log-prob head all work unchanged. Its
cost is attention over the whole packed row with a dense mask (eager / sdpa); for long completions that can exceed
what the shared prompt saves, so `worth_packing` keeps such chunks on TRL's path. The cache-expansion design (prefill
once, then one batched pass over the completions) is the fallback to build if flash-attention kernels (which take no
arbitrary mask) must be covered; it is what generation uses below, where no gradients flow.

The same module shares the other two repeated costs of a step:
- `dedupe_images`: the image processor runs once per distinct image per step (TRL runs the processor over all B*G rows,
  twice);
- `shared_prefill_generate`: on the transformers-generate path the G rollouts of a prompt start from one prefill whose
  cache is expanded over the group.

Supported: Qwen2-VL, Qwen2.5-VL and Qwen3-VL (M-RoPE families whose forward takes explicit 3D positions), with the
eager or sdpa attention implementation. Anything else keeps TRL's path (`unsupported_reason` says why).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
SUPPORTED_ATTENTION = ("eager", "sdpa")
IGNORE = -100


def unsupported_reason(config, attention: str | None = None) -> str | None:
    """Why the shared-prompt passes cannot serve a model with this config (None when they can). `attention` is the
    attention implementation in use (default: the text config's)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}"
    attention = attention or config.get_text_config()._attn_implementation
    if attention not in SUPPORTED_ATTENTION:
        return (
            f"attn_implementation {attention!r} takes no tree-shaped attention mask; use "
            f"{' or '.join(SUPPORTED_ATTENTION)} (model.attn_implementation) to share prompts"
        )
    return None


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
    segments: torch.Tensor  # (groups, Lp): 0 = shared prompt, k = the k-th completion of the group, -1 = padding
    position_ids: torch.Tensor  # (3, groups, Lp)
    shift_labels: torch.Tensor  # (groups, Lp): the token each position predicts, IGNORE elsewhere
    mm_token_type_ids: torch.Tensor | None  # (groups, Lp)
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    source: tuple[torch.Tensor, torch.Tensor]  # packed (group, position) of each scored token ...
    target: tuple[torch.Tensor, torch.Tensor]  # ... and its (row, completion column) in TRL's layout


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
    segments = torch.full((len(groups), longest), -1, dtype=torch.long, device=device)
    packed_positions = torch.zeros((3, len(groups), longest), dtype=positions.dtype, device=device)
    labels = torch.full((len(groups), longest), IGNORE, dtype=rows.input_ids.dtype, device=device)
    mm = None if rows.mm_token_type_ids is None else torch.zeros_like(ids, dtype=rows.mm_token_type_ids.dtype)
    src_g, src_p, dst_r, dst_c = [], [], [], []
    image_rows, pixel_rows = [], []
    for g, (members, cols) in enumerate(zip(groups, prompt_columns, strict=True)):
        first = members[0]
        shared = cols[:-1]
        n = len(shared)
        ids[g, :n] = rows.input_ids[first, shared]
        segments[g, :n] = 0
        packed_positions[:, g, :n] = positions[:, first, shared]
        if mm is not None:
            mm[g, :n] = rows.mm_token_type_ids[first, shared]
        image_rows.extend(image_spans[first])
        pixel_rows.extend(pixel_spans[first])
        start = n
        for k, r in enumerate(members, start=1):
            own = torch.cat([cols[-1:], torch.arange(width, width + lengths[r], device=device)])
            end = start + len(own)
            ids[g, start:end] = rows.input_ids[r, own]
            segments[g, start:end] = k
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
        segments,
        packed_positions,
        labels,
        mm,
        pixel_values,
        image_grid_thw,
        (index(src_g), index(src_p)),
        (index(dst_r), index(dst_c)),
    )


def tree_mask(segments: torch.Tensor, attention: str, dtype: torch.dtype) -> torch.Tensor:
    """(groups, 1, Lp, Lp) mask: a token sees earlier tokens of the shared prompt and of its own segment. Padding sees
    padding, so no row of the mask is empty. Boolean for sdpa, additive for eager (transformers' own conventions)."""
    import torch

    length = segments.size(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    keys, queries = segments[:, None, :], segments[:, :, None]
    allowed = causal & ((keys == 0) | (keys == queries))
    allowed = allowed[:, None]
    if attention == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=segments.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def worth_packing(rows: Rows, groups: list[list[int]], packed_length: int, text_config) -> bool:
    """Whether the packed chunk costs less than TRL's rows: linear layers scale with tokens, dense-mask attention with
    (query, key) pairs. Vision savings are left out, so the estimate leans towards TRL's path."""
    hidden = text_config.hidden_size
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or hidden // heads
    kv = text_config.num_key_value_heads * head_dim
    per_layer = hidden * (2 * heads * head_dim + 2 * kv) + 3 * hidden * text_config.intermediate_size
    pair_cost = 4 * heads * head_dim / (2 * per_layer)  # one (query, key) pair in units of one token
    rows_count, length = rows.input_ids.shape
    trl = rows_count * length + pair_cost * rows_count * length**2
    ours = len(groups) * packed_length + pair_cost * len(groups) * packed_length**2
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


# --------------------------------------------------------------------------------------------------------------------
# Generation from one prefill
# --------------------------------------------------------------------------------------------------------------------


def _cache_kwarg(model) -> str:
    """transformers 5.24 names the cache `cache` (`past_key_values` is deprecated); older 5.x use `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@contextlib.contextmanager
def shared_prefill_generate(model, backbone):
    """While active, `model.generate` prefills each distinct prompt of the batch once (images included) and starts
    every rollout of it from that prefill's key/value cache, expanded over the group. Rows are matched exactly (token
    ids, attention mask, pixels). The M-RoPE offsets of the prefill (`rope_deltas`) are expanded the same way, so the
    decode positions are the ones an ordinary generate computes. `model` is the unwrapped generating model (its
    instance attribute `generate` is patched and restored); `backbone` its multimodal base model."""
    import torch

    had_own = "generate" in model.__dict__
    original = model.generate
    name = _cache_kwarg(model)

    def generate(*args, **kwargs):
        input_ids = kwargs.get("input_ids")
        attention_mask = kwargs.get("attention_mask")
        if (
            args
            or input_ids is None
            or attention_mask is None
            or kwargs.get(name) is not None
            or kwargs.get("pixel_values_videos") is not None
        ):
            return original(*args, **kwargs)
        rows = Rows(
            input_ids,
            attention_mask,
            0,
            kwargs.get("pixel_values"),
            kwargs.get("image_grid_thw"),
            _images_per_row(input_ids, kwargs.get("image_grid_thw"), model.config),
            kwargs.get("mm_token_type_ids"),
        )
        if rows.input_ids.size(1) < 2 or not bool(attention_mask[:, -1].all()):
            return original(*args, **kwargs)
        groups = find_groups(rows) if rows.num_images is not None or rows.pixel_values is None else None
        if not groups or len(groups) == input_ids.size(0):
            return original(*args, **kwargs)
        firsts = [g[0] for g in groups]
        owner = torch.empty(input_ids.size(0), dtype=torch.long, device=input_ids.device)
        for g, members in enumerate(groups):
            owner[members] = g
        image_spans, pixel_spans = rows.image_spans()
        prefill = {
            "input_ids": input_ids[firsts, :-1],
            "attention_mask": attention_mask[firsts, :-1],
            "use_cache": True,
        }
        if rows.mm_token_type_ids is not None:
            prefill["mm_token_type_ids"] = rows.mm_token_type_ids[firsts, :-1]
        if rows.pixel_values is not None:
            prefill["pixel_values"] = rows.pixel_values[[p for f in firsts for p in pixel_spans[f]]]
            prefill["image_grid_thw"] = rows.image_grid_thw[[i for f in firsts for i in image_spans[f]]]
        with torch.no_grad():
            outputs = backbone(**prefill)
        cache = outputs[name] if name in outputs else outputs.past_key_values
        cache.reorder_cache(owner)  # index_select over the batch: one copy per rollout
        if getattr(backbone, "rope_deltas", None) is not None:
            backbone.rope_deltas = backbone.rope_deltas[owner]
        # The images are in the cache now; the rest of the prompt (its last token) is text.
        rest = {k: v for k, v in kwargs.items() if k not in ("pixel_values", "image_grid_thw")}
        return original(**rest, **{name: cache})

    model.generate = generate
    try:
        yield
    finally:
        if had_own:
            model.generate = original
        else:
            del model.generate


def _images_per_row(input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None, config) -> list[int] | None:
    """Images per row, from the image-pad tokens each row holds and the grids' token counts (generate gets no
    `num_images`). None when they cannot be matched."""
    if image_grid_thw is None:
        return None
    merge = config.vision_config.spatial_merge_size**2
    tokens_per_image = (image_grid_thw.prod(-1) // merge).tolist()
    pads = (input_ids == config.image_token_id).sum(-1).tolist()
    counts, i = [], 0
    for n_pads in pads:
        count = 0
        while n_pads > 0 and i < len(tokens_per_image):
            n_pads -= tokens_per_image[i]
            i, count = i + 1, count + 1
        if n_pads != 0:
            return None
        counts.append(count)
    return counts if i == len(tokens_per_image) else None


# --------------------------------------------------------------------------------------------------------------------
# The image processor once per distinct image
# --------------------------------------------------------------------------------------------------------------------


def _fingerprint(image) -> bytes | None:
    """A content key for a PIL image or an array (None: not something we know how to compare)."""
    import torch

    if hasattr(image, "tobytes") and hasattr(image, "mode") and hasattr(image, "size"):  # PIL
        head = f"pil:{image.mode}:{image.size}".encode()
        return head + hashlib.blake2b(image.tobytes(), digest_size=20).digest()
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if hasattr(image, "tobytes") and hasattr(image, "shape") and hasattr(image, "dtype"):  # numpy
        head = f"np:{image.dtype}:{image.shape}".encode()
        return head + hashlib.blake2b(image.tobytes(), digest_size=20).digest()
    return None


class _DedupedImageProcessor:
    """Stands in for a Qwen-VL image processor inside a processor call: processes each distinct image once (results
    are kept for the duration of one training step) and expands `pixel_values` / `image_grid_thw` to every image of
    the call. Everything else is the real image processor's."""

    KEYS = {"pixel_values", "image_grid_thw"}

    def __init__(self, real):
        self._real = real
        self._done: dict[bytes, tuple] = {}

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __call__(self, images=None, **kwargs):
        import torch
        from transformers import BatchFeature

        flat = _flatten(images)
        keys = [_fingerprint(image) for image in flat] if flat is not None else None
        if not keys or any(k is None for k in keys):
            return self._real(images, **kwargs)
        settings = repr(sorted((k, repr(v)) for k, v in kwargs.items() if k != "return_tensors")).encode()
        keys = [settings + key for key in keys]  # the same image under other settings is another result
        todo = {k: image for k, image in zip(keys, flat, strict=True) if k not in self._done}
        if todo:
            out = self._real(list(todo.values()), **kwargs)
            if set(out.keys()) != self.KEYS:  # not the layout this wrapper knows: stop wrapping
                return self._real(images, **kwargs)
            grids = torch.as_tensor(out["image_grid_thw"])
            pixels = torch.as_tensor(out["pixel_values"])
            for k, grid, chunk in zip(todo, grids, torch.split(pixels, grids.prod(-1).tolist()), strict=True):
                self._done[k] = (grid, chunk)
        grid = torch.stack([self._done[k][0] for k in keys])
        pixels = torch.cat([self._done[k][1] for k in keys])
        tensor_type = kwargs.get("return_tensors")
        if tensor_type is None:
            return BatchFeature({"pixel_values": pixels.numpy(), "image_grid_thw": grid.numpy()})
        return BatchFeature({"pixel_values": pixels, "image_grid_thw": grid}, tensor_type=tensor_type)


def _flatten(images) -> list | None:
    if images is None:
        return None
    if not isinstance(images, list | tuple):
        return [images]
    flat = []
    for item in images:
        if isinstance(item, list | tuple):
            flat.extend(item)
        elif item is not None:
            flat.append(item)
    return flat


@contextlib.contextmanager
def dedupe_images(processor):
    """While active, `processor` runs its image processor once per distinct image (by content). Only for processors
    whose image processor returns exactly `pixel_values` and `image_grid_thw` (the Qwen-VL families)."""
    real = getattr(processor, "image_processor", None)
    if real is None or isinstance(real, _DedupedImageProcessor):
        yield
        return
    processor.image_processor = _DedupedImageProcessor(real)
    try:
        yield
    finally:
        processor.image_processor = real
