"""The tiny Qwen2-VL: offline, deterministic, small, with reasoning tags and option letters as single tokens."""

import hashlib

from med_r1.cli import main


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_bytes_other_seed_other_weights(tiny_model, tmp_path):
    assert main(["tiny-model", str(tmp_path / "again"), "--seed", "0"]) == 0
    assert digest(tmp_path / "again") == digest(tiny_model)
    assert main(["tiny-model", str(tmp_path / "other"), "--seed", "1"]) == 0
    assert digest(tmp_path / "other")["model.safetensors"] != digest(tiny_model)["model.safetensors"]


def test_small_real_processor_and_single_tokens(tiny_model):
    from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2VLProcessor

    assert sum(p.stat().st_size for p in tiny_model.iterdir()) < 2 * 1024 * 1024
    processor = AutoProcessor.from_pretrained(tiny_model)
    assert type(processor) is Qwen2VLProcessor
    tokenizer = processor.tokenizer
    for token in ["<think>", "</think>", "<answer>", "</answer>", *"ABCDEFGHIJ"]:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    ids = tokenizer.encode("<think>x</think><answer>B</answer>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>x</think><answer>B</answer>"  # tags survive
    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")


def test_forward_with_an_image(tiny_model):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which? A)CT, B)MRI"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (56, 56), "red")], return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == 4  # 56x56 -> 16 patches -> 4 tokens
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == len(processor.tokenizer) and torch.isfinite(logits).all()


def test_tokenizer_corpus_is_rebuilt_from_the_training_split_only():
    """The words the tiny tokenizer learns come from tools/build_tiny_corpus.py, which reads only the quickstart's
    training split: the committed file is exactly a fresh build, and its lines are the training questions' texts
    (held-out questions share a text only where the same question is also asked about a training image)."""
    import subprocess
    import sys
    from pathlib import Path

    from med_r1.config import load_recipe
    from med_r1.data.sources import select
    from med_r1.prompts import format_problem
    from med_r1.tiny import CORPUS_FILE

    root = Path(__file__).resolve().parents[1]
    check = subprocess.run(
        [sys.executable, str(root / "tools" / "build_tiny_corpus.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    recipe = load_recipe(str(root / "recipes" / "quickstart.yaml"))
    train = {
        format_problem(q.question, q.options) for q in select(recipe.data.train, recipe.data.split, "t").questions
    }
    lines = {line for line in CORPUS_FILE.read_text(encoding="utf-8").splitlines() if not line.startswith("#")}
    assert lines == train
