"""Evaluation images, sized the way a recipe asks: as training sizes them, or as Med-R1's evaluation does.

Med-R1 trains on images resized to 384x384 but evaluates at native resolution: its scripts pass `file://` paths to
qwen-vl-utils' `process_vision_info`, whose `fetch_image` smart-resizes each image to multiples of patch x merge
(28 px for Qwen2/2.5-VL) within Qwen's pixel bounds (3,136 - 12,845,056), and the processor then takes them as they are.
`EvalImages` decodes images as training does (DICOM, volumes, 16-bit greyscale and EXIF orientation handled by
`med_r1.data.medical`), then either resizes them to `eval.image_size` squares or hands them to qwen-vl-utils' own
`fetch_image` with the evaluation's pixel bounds, so the image tokens are exactly the ones Med-R1's evaluation
produces. qwen-vl-utils imports torch and torchvision at its top, so it is imported where images are sized.
"""

from __future__ import annotations

from PIL import Image

from med_r1.config import Recipe, eval_images
from med_r1.data.rows import ImageLoader
from med_r1.model import pixel_bounds


class EvalImages:
    """Loads a question's images for evaluation with `processor` (whose pixel bounds are the evaluation's)."""

    def __init__(self, recipe: Recipe, processor):
        side, _, _ = eval_images(recipe)
        self.loader = ImageLoader(recipe.data.frames, recipe.data.window, side)
        self.processor = processor
        self.sizing = "square" if side else "qwen-vl-utils" if qwen_sizable(processor) else "processor"
        """'square': resized to eval.image_size like training; 'qwen-vl-utils': fetch_image; 'processor': as is."""

    def load(self, paths: list[str], question_id: str) -> list[Image.Image]:
        frames = self.loader.load(paths, question_id)
        return qwen_sized(frames, self.processor) if self.sizing == "qwen-vl-utils" else frames


def qwen_sizable(processor) -> bool:
    """Whether the processor tiles images as qwen-vl-utils assumes: patches merged 2x2 (Qwen2/2.5/3-VL)."""
    image_processor = getattr(processor, "image_processor", None)
    return getattr(image_processor, "merge_size", None) == 2 and bool(getattr(image_processor, "patch_size", None))


def qwen_sized(images: list[Image.Image], processor) -> list[Image.Image]:
    """Each image through qwen-vl-utils' `fetch_image`, within the processor's pixel bounds and patch size."""
    from qwen_vl_utils import fetch_image  # lazy: imports torch and torchvision

    bounds, patch = pixel_bounds(processor), processor.image_processor.patch_size
    return [fetch_image({"image": image, **bounds}, image_patch_size=patch) for image in images]
