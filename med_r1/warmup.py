"""The supervised warm-up before GRPO (`warmup:` in a recipe): TRL's SFTTrainer teaches the policy the recipe's answer
format on the training questions, and GRPO then starts from the warmed-up model (as R1 recipes that start from a
short supervised stage do). Only training questions and their answers are used: the evaluation split is never read.

Each training question becomes `warmup.option_orders` rows: its own option order and random reorderings of it, the
target letter following its option, so the letter has to be read off the options rather than remembered by position.
The target is what the recipe's rewards ask for: `<think>{warmup.think}</think><answer>{letter}</answer>`, or only the
answer tag for no-think templates; open questions answer with their text.

The warmed-up model goes to output_dir/warmup/model/ with a record of what made it (`warmup.json`, written last): a
later run of the same recipe and data reuses it (a crashed GRPO run does not repeat its warm-up), a changed one
trains it again. LoRA recipes warm up a LoRA adapter and merge it, so GRPO adds its own adapter on top.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

from med_r1.config import PromptConfig, Recipe
from med_r1.data.rows import IMAGE_PATHS, ImageLoader, TrainingRows, build_prompt
from med_r1.errors import ConfigError
from med_r1.io import atomic_write_text
from med_r1.prompts import eval_template, format_problem, options_to
from med_r1.records import LETTERS, Question

logger = logging.getLogger(__name__)

FOLDER = "warmup"
RECORD = "warmup.json"
NO_THINK = ("medr1_nothink", "medr1_eval_nothink")
FROM_GRPO = ("seed", "bf16", "fp16", "use_cpu", "gradient_checkpointing", "report_to", "logging_steps", "disable_tqdm")


def target(question: Question, template: str, think: str) -> str:
    """The completion the warm-up teaches for one question (`question.answer` is the letter of its own options)."""
    choice = bool(question.options)
    answer = question.answer if choice else question.answer.strip()
    text = question.options[LETTERS.index(question.answer)] if choice else answer
    if template in NO_THINK:
        return f"<answer>{answer}</answer>"
    listed = format_problem("", question.options).strip()
    thought = think.format(
        modality=question.modality,
        question_type=question.question_type,
        answer=text,
        options=listed,
        options_to_answer=options_to(question.options, answer) if choice else listed,
    )
    return f"<think>{thought}</think><answer>{answer}</answer>"


def reordered(question: Question, orders: int, rng: random.Random) -> list[Question]:
    """The question in its own option order, then `orders - 1` random reorderings (repeats allowed when a question
    has few options), each with the letter of its answer moved along."""
    if not question.options or orders <= 1:
        return [question]
    right = question.options[LETTERS.index(question.answer)]
    out = [question]
    for _ in range(orders - 1):
        options = list(question.options)
        rng.shuffle(options)
        out.append(dataclasses.replace(question, options=tuple(options), answer=LETTERS[options.index(right)]))
    return out


def records(questions: list[Question], recipe: Recipe) -> dict[str, list]:
    """The warm-up's dataset columns: conversational `prompt` and `completion`, image paths, question ids."""
    warm, prompt = recipe.warmup, recipe.prompt
    wordings = [prompt]
    if warm.eval_prompt:
        wordings.append(PromptConfig(recipe.eval.prompt or eval_template(prompt.template), prompt.system))
    rng = random.Random(recipe.grpo.get("seed", 42))
    columns: dict[str, list] = {"prompt": [], "completion": [], IMAGE_PATHS: [], "question_id": []}
    for question in questions:
        for k, variant in enumerate(reordered(question, warm.option_orders, rng)):
            wording = wordings[k % len(wordings)]
            columns["prompt"].append(build_prompt(variant, wording))
            columns["completion"].append(
                [{"role": "assistant", "content": target(variant, wording.template, warm.think)}]
            )
            columns[IMAGE_PATHS].append(list(variant.images))
            columns["question_id"].append(variant.question_id)
    return columns


def fingerprint(recipe: Recipe, questions: list[Question]) -> dict[str, Any]:
    """What the warmed-up model depends on; a different one trains the warm-up again."""
    ids = hashlib.sha256("\n".join(q.question_id for q in questions).encode()).hexdigest()
    return {
        "warmup": dataclasses.asdict(recipe.warmup),
        "model": recipe.model.name_or_path,
        "finetune": recipe.model.finetune,
        "prompt": dataclasses.asdict(recipe.prompt),
        "eval_prompt": recipe.eval.prompt,
        "data": dataclasses.asdict(recipe.data),
        "questions": ids,
        "seed": recipe.grpo.get("seed", 42),
    }


def done(out: Path, expected: dict[str, Any]) -> Path | None:
    """The warmed-up model of an earlier run with the same fingerprint, if there is one."""
    record = out / FOLDER / RECORD
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model = out / FOLDER / "model"
    return model if saved == json.loads(json.dumps(expected)) and model.is_dir() else None


def sft_config(recipe: Recipe, grpo_kwargs: dict[str, Any], out: Path):
    from trl import SFTConfig  # lazy: trl imports torch

    warm = recipe.warmup
    kwargs = {key: grpo_kwargs[key] for key in FROM_GRPO if key in grpo_kwargs}
    kwargs.update(
        output_dir=str(out / "trainer"),
        num_train_epochs=warm.epochs,
        learning_rate=warm.learning_rate,
        per_device_train_batch_size=warm.batch_size,
        gradient_accumulation_steps=warm.gradient_accumulation_steps,
        save_strategy="no",
        max_length=None,  # never truncate a multimodal prompt (image tokens cut off break the model)
        remove_unused_columns=False,  # the images are decoded from the image paths as rows are read
    )
    kwargs.setdefault("disable_tqdm", True)  # the log lines every logging_steps say how far it is
    kwargs.update(warm.sft)
    try:
        return SFTConfig(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"warmup: trl.SFTConfig rejected the settings: {exc}") from None


def run(
    recipe: Recipe, questions: list[Question], processor, model, grpo_kwargs: dict, peft_config=None, callbacks=()
):
    """Train the warm-up on `questions` (the training split) and save it; returns (model folder, training log).
    Every process calls it; the Trainer writes from the main one only."""
    import datasets  # lazy: datasets pulls in pyarrow and pandas
    from accelerate import PartialState  # lazy: accelerate imports torch
    from trl import SFTTrainer  # lazy: trl imports torch

    out = Path(recipe.output_dir) / FOLDER
    main = PartialState().is_main_process
    if main:
        shutil.rmtree(out, ignore_errors=True)  # an earlier warm-up that did not finish, or one of other settings
    PartialState().wait_for_everyone()
    columns = records(questions, recipe)
    reader = TrainingRows(
        ImageLoader.from_config(recipe.data), columns, recipe.data.skip_bad_rows, recipe.guards.max_bad_rows
    )
    dataset = datasets.Dataset.from_dict(columns).with_transform(reader)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(recipe, grpo_kwargs, out),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    logger.info(
        "warm-up: %d rows (%d questions x up to %d option orders), %g epochs",
        len(dataset),
        len(questions),
        recipe.warmup.option_orders,
        recipe.warmup.epochs,
    )
    trainer.train()
    trained = trainer.model
    if peft_config is not None:
        trained = trainer.accelerator.unwrap_model(trained).merge_and_unload()
    folder = out / "model"
    if main:
        trained.save_pretrained(folder)
        processor.save_pretrained(folder)
        atomic_write_text(out / RECORD, json.dumps(fingerprint(recipe, questions), indent=2))
    trainer.accelerator.wait_for_everyone()
    if main:
        shutil.rmtree(out / "trainer", ignore_errors=True)
    return folder, [row for row in trainer.state.log_history if "loss" in row]
