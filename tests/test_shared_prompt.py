"""Shared-prompt passes give TRL's numbers: log-probs, entropies and gradients of the packed path against TRL's own
`_get_per_token_logps_and_entropies` on the same trainer, for the three Qwen-VL families, LoRA and full fine-tuning,
left-padded prompts of different lengths, volumes, several group sizes and groups split across chunks; generation from
one prefill against ordinary `generate`; and a short training run with the switch on and off."""

import copy
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from med_r1 import segment_attention, shared_inputs, shared_prompt
from med_r1.trainer import MedR1GRPOTrainer

QUESTIONS = [  # different lengths, so the chunk's prompts are left-padded differently
    "What imaging modality is used to acquire this image? A)CT, B)MRI, C)X-Ray, D)Ultrasound",
    "Which organ is shown?",
    "Is there any abnormality? A)Yes, B)No",
]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from med_r1.tiny import build_tiny_qwen2vl

    root = tmp_path_factory.mktemp("tiny-archs")
    return {arch: build_tiny_qwen2vl(root / arch, arch=arch) for arch in ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")}


def make_trainer(path, finetune="full", attn="sdpa", share=True, **config):
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation=attn)
    processor = AutoProcessor.from_pretrained(path, padding_side="left")
    args = dict(
        output_dir=str(path.parent / "out"),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        bf16=False,
        use_cpu=True,
        report_to="none",
        gradient_checkpointing=False,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return MedR1GRPOTrainer(
        model=model,
        reward_funcs=[lambda completions, **kwargs: [0.0] * len(completions)],
        args=GRPOConfig(**{**args, **config}),
        train_dataset=datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": "x"}]] * 4}),
        processing_class=processor,
        peft_config=lora if finetune == "lora" else None,
        share_prompt=share,
    )


def trl_rows(processor, groups: int, generations: int, images_per_question: int = 1, width: int = 10, seed: int = 0):
    """What TRL builds for a chunk: `groups` prompts x `generations` rollouts, left-padded prompts, right-padded
    completions of random lengths (some empty), and the processor's image fields."""
    rng = torch.Generator().manual_seed(seed)
    images, texts = [], []
    for g in range(groups):
        question = [
            Image.new("RGB", (56 + 28 * ((g + i) % 3), 56 + 28 * (i % 2)), (40 * g + 9 * i, 90, 200 - 30 * i))
            for i in range(images_per_question)
        ]
        content = [{"type": "image"} for _ in question] + [{"type": "text", "text": QUESTIONS[g % len(QUESTIONS)]}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        images += [question] * generations
        texts += [text] * generations
    encoded = processor(images=images, text=texts, padding=True, return_tensors="pt")
    rows = len(texts)
    completions = torch.randint(20, 300, (rows, width), generator=rng)
    lengths = torch.randint(0, width + 1, (rows,), generator=rng)
    lengths[0] = width  # one full-width completion, so logits_to_keep is used whole
    completion_mask = (torch.arange(width)[None] < lengths[:, None]).long()
    completions = completions.masked_fill(completion_mask == 0, processor.tokenizer.pad_token_id)
    return dict(
        input_ids=torch.cat([encoded["input_ids"], completions], 1),
        attention_mask=torch.cat([encoded["attention_mask"], completion_mask], 1),
        logits_to_keep=width,
        pixel_values=encoded["pixel_values"],
        image_grid_thw=encoded["image_grid_thw"],
        num_images=[len(x) for x in images],
        mm_token_type_ids=torch.cat([encoded["mm_token_type_ids"], torch.zeros_like(completions)], 1),
    )


def vision_patches(model):
    """Patches the vision tower encodes, per call."""
    seen = []
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.model.visual.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[0]))
    return seen


def scored(trainer, rows, shared: bool, batch_size=None):
    """Log-probs, entropies and parameter gradients of a weighted sum of both, by the shared or TRL's own path."""
    from trl import GRPOTrainer

    model = trainer.model
    model.train()
    model.zero_grad()
    method = trainer._get_per_token_logps_and_entropies if shared else GRPOTrainer._get_per_token_logps_and_entropies
    args = (trainer, model) if not shared else (model,)
    logps, entropies, _ = method(*args, batch_size=batch_size, compute_entropy=True, **rows)
    weights = torch.randn(logps.shape, generator=torch.Generator().manual_seed(1))
    ((logps * weights).sum() + 0.1 * entropies.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), entropies.detach(), grads


def assert_same(trl, ours):
    assert trl[0].shape == ours[0].shape
    assert (trl[0] - ours[0]).abs().max() <= 1e-5
    assert (trl[1] - ours[1]).abs().max() <= 1e-5
    assert trl[2].keys() == ours[2].keys() and trl[2]
    for name, grad in trl[2].items():
        error = (grad - ours[2][name]).norm() / grad.norm().clamp(min=1e-12)
        assert error <= 1e-4, f"{name}: relative gradient error {error:.2e}"


@pytest.mark.parametrize("arch", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"])
@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_shared_log_probs_and_gradients_equal_trl(tiny_models, arch, finetune):
    trainer = make_trainer(tiny_models[arch], finetune=finetune)
    assert trainer.share_prompt_fallback is None
    rows = trl_rows(trainer.processing_class, groups=3, generations=4)
    assert len(set(rows["attention_mask"][:, : -rows["logits_to_keep"]].sum(-1).tolist())) > 1  # left padding
    seen = vision_patches(trainer.model)
    trl = scored(trainer, rows, shared=False)
    trl_patches, seen[:] = sum(seen), []
    ours = scored(trainer, rows, shared=True)
    assert sum(seen) * 4 == trl_patches  # each image encoded once per group, not once per rollout
    assert_same(trl, ours)
    if finetune == "full":
        assert any(".visual." in name for name in ours[2])  # the vision tower trains through the shared prompt
    else:
        assert all("lora_" in name for name in ours[2])


@pytest.mark.parametrize("generations", [2, 4, 8])
def test_group_sizes_volumes_and_groups_split_across_chunks(tiny_models, generations):
    trainer = make_trainer(tiny_models["qwen2-vl"])
    rows = trl_rows(trainer.processing_class, groups=2, generations=generations, images_per_question=3, seed=2)
    assert set(rows["num_images"]) == {3}
    assert_same(scored(trainer, rows, shared=False), scored(trainer, rows, shared=True))
    # Chunks of 3 rows: groups straddle chunk boundaries; a chunk of one row has no twin and takes TRL's path.
    assert_same(scored(trainer, rows, False, batch_size=3), scored(trainer, rows, True, batch_size=3))


def test_eager_attention_and_the_reference_pass_without_grad(tiny_models):
    trainer = make_trainer(tiny_models["qwen3-vl"], attn="eager")
    assert trainer.share_prompt_fallback is None
    rows = trl_rows(trainer.processing_class, groups=2, generations=4)
    assert_same(scored(trainer, rows, shared=False), scored(trainer, rows, shared=True))
    with torch.no_grad():  # how TRL runs the old-policy and reference passes
        from trl import GRPOTrainer

        trl = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, batch_size=4, **rows)[0]
        ours = trainer._get_per_token_logps_and_entropies(trainer.model, batch_size=4, **rows)[0]
    assert (trl - ours).abs().max() <= 1e-5


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_long_completions_and_groups_of_eight_through_the_segment_attention(tiny_models, attn):
    """512-token completions, G = 8: the packed path engages (each image encoded once per group) and equals TRL's,
    with gradient checkpointing on, whose recompute must see the segment layout again."""
    trainer = make_trainer(tiny_models["qwen2.5-vl"], attn=attn, gradient_checkpointing=True)
    trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    rows = trl_rows(trainer.processing_class, groups=2, generations=8, width=512, seed=3)
    seen = vision_patches(trainer.model)
    trl = scored(trainer, rows, shared=False)
    trl_patches, seen[:] = sum(seen), []
    ours = scored(trainer, rows, shared=True)
    assert sum(seen) * 8 == trl_patches  # each image encoded once per group
    assert_same(trl, ours)


def dense_tree_attention(query, key, value, segments, scale):
    """Reference: one (L, L) boolean tree mask over each packed row (what the segment attention replaces)."""
    length = segments.size(1)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    keys, queries = segments[:, None, :], segments[:, :, None]
    allowed = (causal & ((keys == 0) | (keys == queries)))[:, None]
    rep = query.size(1) // key.size(1)
    key, value = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=allowed, scale=scale)
    return out.transpose(1, 2)


@pytest.mark.parametrize("prompts", [[5, 3], [0, 4]])  # a one-token prompt shares nothing but its segment copies
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (6, 1)])
def test_segment_attention_equals_the_dense_tree_mask(prompts, heads):
    rng = torch.Generator().manual_seed(0)
    lengths = [[3, 1, 4], [2, 5]]  # segment lengths per group
    spans, rows = [], []
    for g, (prompt, sizes) in enumerate(zip(prompts, lengths, strict=True)):
        start, row = prompt, [0] * prompt
        for k, size in enumerate(sizes, start=1):
            spans.append((g, start, size))
            start, row = start + size, row + [k] * size
        rows.append(row)
    length = max(map(len, rows)) + 2  # padding at the end of both rows
    segments = torch.tensor([row + [-1] * (length - len(row)) for row in rows])
    layout = segment_attention.Layout.build(spans, prompts, length, config=None, device="cpu")
    q_heads, kv_heads = heads
    query = torch.randn(2, q_heads, length, 8, generator=rng, requires_grad=True)
    key = torch.randn(2, kv_heads, length, 8, generator=rng, requires_grad=True)
    value = torch.randn(2, kv_heads, length, 8, generator=rng, requires_grad=True)
    real = (segments >= 0)[:, :, None, None]
    ours = segment_attention.attention(layout, query, key, value, scaling=0.3, dropout=0.0)
    dense = dense_tree_attention(query, key, value, segments, 0.3)
    assert (ours - dense).masked_fill(~real, 0).abs().max() <= 1e-5
    assert bool((ours.masked_fill(real, 0) == 0).all())  # padding gets zeros
    weights = torch.randn(ours.shape, generator=rng).masked_fill(~real, 0)
    got = torch.autograd.grad((ours * weights).sum(), (query, key, value))
    want = torch.autograd.grad((dense * weights).sum(), (query, key, value))
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max() <= 1e-5
    mask_entries = layout.segment_mask[0, 0].numel() * len(spans) + layout.prompt_mask.numel()
    assert mask_entries < 2 * length * length  # per row: segments x C x (P + C), not (P + G C)^2 per group


def test_the_installed_wrapper_is_transparent_without_a_layout(tiny_models):
    from transformers import AutoModelForImageTextToText

    for attn in ("sdpa", "eager"):
        model = AutoModelForImageTextToText.from_pretrained(tiny_models["qwen3-vl"], attn_implementation=attn).eval()
        ids = torch.randint(20, 300, (2, 12), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            before = model(input_ids=ids).logits
            segment_attention.install(attn)
            after = model(input_ids=ids).logits
        assert torch.equal(before, after)
    with pytest.raises(ValueError, match="paged"):
        segment_attention.install("paged|eager")


def test_rows_that_share_text_but_not_images_are_not_shared(tiny_models):
    trainer = make_trainer(tiny_models["qwen2-vl"])
    rows = trl_rows(trainer.processing_class, groups=1, generations=4)
    # Same question and image size, other pixels: the prompt token ids are equal, the prompts are not.
    rows["pixel_values"] = rows["pixel_values"].clone()
    patches = rows["image_grid_thw"][0].prod().item()
    rows["pixel_values"][2 * patches : 3 * patches] += 0.5
    chunk = shared_prompt.Rows(**rows)
    assert shared_prompt.find_groups(chunk) == [[0, 1, 3], [2]]
    assert_same(scored(trainer, rows, shared=False), scored(trainer, rows, shared=True))


def test_switch_off_and_unsupported_settings_fall_back_and_say_why(tiny_models, caplog):
    with caplog.at_level(logging.WARNING, logger="med_r1.trainer"):
        trainer = make_trainer(tiny_models["qwen2-vl"], share=False)
    assert trainer.share_prompt_fallback == "model.share_prompt is false"
    assert not caplog.records  # switching it off is not a warning
    assert shared_prompt.unsupported_reason(trainer.model.config, "flash_attention_2") is None
    assert "'paged|eager'" in shared_prompt.unsupported_reason(trainer.model.config, "paged|eager")
    config = copy.deepcopy(trainer.model.config)
    sliding = config.get_text_config()
    sliding.use_sliding_window, sliding.layer_types = True, ["sliding_attention"] * sliding.num_hidden_layers
    assert "sliding-window" in shared_prompt.unsupported_reason(config)
    rows = trl_rows(trainer.processing_class, groups=2, generations=4)
    seen = vision_patches(trainer.model)
    trainer._get_per_token_logps_and_entropies(trainer.model, **rows)
    assert sum(seen) == rows["pixel_values"].shape[0]  # TRL's path: every row's images


def test_a_text_only_model_falls_back_with_one_warning(caplog):
    import datasets
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig

    from med_r1.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    with caplog.at_level(logging.WARNING, logger="med_r1.trainer"):
        trainer = MedR1GRPOTrainer(
            model=Qwen2ForCausalLM(config),
            reward_funcs=[lambda completions, **kwargs: [0.0] * len(completions)],
            args=GRPOConfig(output_dir="unused", bf16=False, use_cpu=True, report_to="none", num_generations=4),
            train_dataset=datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": "x"}]] * 4}),
            processing_class=tokenizer,
        )
    assert "'qwen2'" in trainer.share_prompt_fallback
    assert [r.getMessage() for r in caplog.records] == [
        f"model.share_prompt: using TRL's unshared passes, because {trainer.share_prompt_fallback}"
    ]


@pytest.mark.parametrize("arch", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"])
def test_generation_from_one_prefill_equals_generate(tiny_models, arch):
    from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

    model = AutoModelForImageTextToText.from_pretrained(tiny_models[arch]).eval()
    processor = AutoProcessor.from_pretrained(tiny_models[arch], padding_side="left")
    rows = trl_rows(processor, groups=2, generations=4, width=1)
    width = rows["input_ids"].shape[1] - 1
    inputs = {
        "input_ids": rows["input_ids"][:, :width],
        "attention_mask": rows["attention_mask"][:, :width],
        "mm_token_type_ids": rows["mm_token_type_ids"][:, :width],
        "pixel_values": rows["pixel_values"],
        "image_grid_thw": rows["image_grid_thw"],
    }
    config = GenerationConfig(
        max_new_tokens=10,
        do_sample=True,
        top_k=0,
        pad_token_id=processor.tokenizer.pad_token_id,
        eos_token_id=processor.tokenizer.eos_token_id,
        suppress_tokens=[model.config.image_token_id],
    )
    seen = vision_patches(model)

    def generate(shared: bool, sample: bool):
        torch.manual_seed(0)
        config.do_sample = sample
        with torch.no_grad(), shared_inputs.shared_prefill_generate(model, model.model) if shared else _nothing():
            return model.generate(**inputs, generation_config=config)

    for sample in (False, True):
        plain = generate(False, sample)
        plain_patches, seen[:] = sum(seen), []
        shared = generate(True, sample)
        assert torch.equal(plain, shared)
        assert sum(seen) * 4 == plain_patches  # the prefill encoded each image once
        seen.clear()
    assert "generate" not in model.__dict__  # the patch is gone


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_image_processor_runs_once_per_distinct_image(tiny_models):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models["qwen2-vl"], padding_side="left")
    images = [[Image.new("RGB", (56, 56 + 28 * g), (60 * g, 0, 0))] for g in range(2) for _ in range(4)]
    texts = [processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)] * 8
    expected = processor(images=images, text=texts, padding=True, return_tensors="pt")
    calls = []
    real = processor.image_processor
    with shared_inputs.dedupe_images(processor):
        real.preprocess, original = (
            (lambda imgs, *a, **k: calls.append(len(imgs)) or original(imgs, *a, **k)),
            (real.preprocess),
        )
        copies = [[image.copy() for image in row] for row in images]  # equal content, other objects (TRL deep-copies)
        got = [processor(images=copies, text=texts, padding=True, return_tensors="pt") for _ in range(2)]
        del real.preprocess
    assert calls == [2]  # 16 images in two calls, 2 distinct
    assert processor.image_processor is real
    for batch in got:
        assert batch.keys() == expected.keys()
        assert all(torch.equal(batch[k], expected[k]) for k in expected)


def test_regroup_keeps_each_optimizer_steps_rows_and_puts_twins_together():
    from trl.trainer.utils import split_tensor_dict

    prompts = torch.tensor([[0, 5, 6], [7, 8, 9]])
    order = [0, 1, 0, 1, 1, 0, 0, 1]  # TRL's row-level shuffle of two prompts x 4 rollouts
    batch = {
        "prompt_ids": prompts[order],
        "prompt_mask": torch.ones(8, 3, dtype=torch.long),
        "completion_ids": torch.arange(8)[:, None],
        "advantages": torch.arange(8.0),
        "num_items_in_batch": torch.tensor(8),
    }
    micro = split_tensor_dict(batch, 4)  # 4 micro-batches of 2 rows; two optimizer steps of 2 micro-batches
    regrouped = shared_prompt.regroup(micro, window=2)
    for step in range(2):
        before = torch.cat([m["completion_ids"] for m in micro[2 * step : 2 * step + 2]]).flatten().tolist()
        after = torch.cat([m["completion_ids"] for m in regrouped[2 * step : 2 * step + 2]]).flatten().tolist()
        assert sorted(before) == sorted(after)  # the same rows in the same optimizer step
    for m in regrouped:
        assert m["prompt_ids"][0].equal(m["prompt_ids"][1])  # each micro-batch holds one prompt's rows
        assert m["num_items_in_batch"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 2])
def test_training_with_the_switch_on_and_off_ends_with_equal_weights(tiny_model, tmp_path, accumulation):
    from med_r1.config import parse_recipe
    from med_r1.plan import build_plan
    from med_r1.train import build_trainer

    # A reward that differs between any two random rollouts, so every group has a learning signal.
    plugin = tmp_path / "spread.py"
    plugin.write_text(
        "def distinct_characters(completions, **kwargs):\n    return [len(set(str(c))) / 10 for c in completions]\n"
    )

    def train(share: bool):
        recipe = parse_recipe(
            {
                "model": {"name_or_path": str(tiny_model), "finetune": "full", "share_prompt": share},
                "data": {"train": {"path": "bundled", "limit": 16}, "image_size": 56},
                "output_dir": str(tmp_path / f"run-{share}"),
                "rewards": [{"name": "format_partial"}, {"name": f"{plugin}:distinct_characters"}],
                "grpo": {
                    "max_steps": 3,
                    "per_device_train_batch_size": 8 // accumulation,
                    "gradient_accumulation_steps": accumulation,
                    "num_generations": 4,
                    "max_completion_length": 12,
                    "learning_rate": 2e-4,
                    "beta": 0.04,
                    "save_strategy": "no",
                    "report_to": "none",
                    "seed": 0,
                    "disable_tqdm": True,
                    "gradient_checkpointing": accumulation == 2,  # the packed path needs no cache: works here too
                },
            }
        )
        trainer = build_trainer(recipe, build_plan(recipe, cuda=False), cuda=False)
        assert (trainer.share_prompt_fallback is None) == share
        seen = vision_patches(trainer.model)
        trainer.train()
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}, sum(seen)

    (off, off_patches), (on, on_patches) = train(False), train(True)
    assert on_patches * 4 == off_patches  # generation, reference and policy passes: each image once per group
    from safetensors.torch import load_file

    moved = (on["lm_head.weight"] - load_file(tiny_model / "model.safetensors")["lm_head.weight"]).abs().max()
    assert moved > 1e-4  # the run trained
    worst = max((off[n] - on[n]).abs().max().item() for n in off)
    assert worst <= 1e-4


def test_validate_says_whether_prompts_are_shared(capsys):
    from med_r1.cli import main
    from med_r1.config import load_recipe, recipe_to_dict

    recipe = str(Path(__file__).parents[1] / "recipes" / "quickstart.yaml")
    assert recipe_to_dict(load_recipe(recipe))["model"]["share_prompt"] is True  # in the resolved recipe.yaml
    assert main(["validate", recipe]) == 0
    assert "share_prompt: on" in capsys.readouterr().out
    assert main(["validate", recipe, "model.attn_implementation=flash_attention_2"]) == 0
    assert "share_prompt: on" in capsys.readouterr().out  # the segment attention stands in front of flash kernels
