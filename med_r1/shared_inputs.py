"""The other two costs GRPO repeats per rollout, shared per prompt (the log-prob passes are `med_r1.shared_prompt`):

- `shared_prefill_generate`: on the transformers-generate path the G rollouts of a prompt start from one prefill whose
  key/value cache is expanded over the group;
- `dedupe_images`: the image processor runs once per distinct image per step (TRL runs the processor over all B*G
  rows, twice).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
from typing import TYPE_CHECKING

from med_r1.shared_prompt import Rows, find_groups

if TYPE_CHECKING:
    import torch


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
