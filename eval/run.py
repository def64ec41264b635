"""`med-r1 eval RECIPE [key=value ...]`: evaluate a base model or a trained run on the recipe's evaluation data.

    med-r1 eval recipes/med-r1/think_full.yaml                       # the run's final model, Med-R1's eval prompt
    med-r1 eval recipes/med-r1/think_full.yaml eval.model=base eval.prompt=medr1_zeroshot

Writes output_dir/eval/<name>/: predictions.jsonl (one line per question, appended as batches finish), metrics.json
and metrics.md. An interrupted evaluation resumes where it stopped: answered questions are skipped and a torn last
line is cut off, so every question ends up with exactly one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from med_r1 import run_folder
from med_r1.answers import MEDR1_RULES, choice_letter, extract_answer, is_correct, medr1_eval_correct, yes_no
from med_r1.config import Recipe, eval_images
from med_r1.data.rows import build_prompt
from med_r1.errors import DataError, UserError
from med_r1.eval import open_scores
from med_r1.eval.generate import HFBackend, VLLMBackend, pick_backend
from med_r1.eval.images import EvalImages
from med_r1.eval.metrics import majority, summarize, to_markdown
from med_r1.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from med_r1.model import (
    apply_pixel_bounds,
    auto_model_class,
    cuda_available,
    load_processor,
    pretrained_kwargs,
    resolve_dtype,
    resolve_model_path,
)
from med_r1.plan import build_plan
from med_r1.prompts import TEMPLATES, eval_template, medr1_eval_rule
from med_r1.records import Question

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """What is evaluated: a full model folder or hub id, or a LoRA adapter on its base."""

    model: str
    adapter: str | None
    processor: str
    label: str
    is_base: bool


def resolve_target(recipe: Recipe) -> Target:
    choice = recipe.eval.model
    base = resolve_model_path(recipe.model.name_or_path)
    if choice is None:
        out = Path(recipe.output_dir)
        if run_folder.final_model(out) is None:
            logger.warning(
                "no trained model in %s; evaluating the base model %s",
                out / run_folder.FINAL,
                recipe.model.name_or_path,
            )
            return Target(base, None, base, recipe.model.name_or_path, True)
        choice = str(run_folder.final_model(out))
    if choice == "base":
        return Target(base, None, base, recipe.model.name_or_path, True)
    return target_from_folder(Path(choice).expanduser())


def target_from_folder(path: Path) -> Target:
    if not path.exists():
        raise UserError(
            f"eval.model: {path} does not exist; give a run folder, its model/ or checkpoint-N/ folder, or eval.model=base"
        )
    if (path / run_folder.RECIPE).exists() and run_folder.final_model(path):  # a run folder: its final model
        path = run_folder.final_model(path)
    has_processor = (path / "processor_config.json").exists() or (path / "tokenizer_config.json").exists()
    if (path / "adapter_config.json").exists():
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError(f"eval.model: {path}/adapter_config.json names no base model")
        return Target(base, str(path), str(path) if has_processor else base, str(path), False)
    if (path / "config.json").exists():
        return Target(str(path), None, str(path) if has_processor else str(path), str(path), False)
    raise UserError(
        f"eval.model: {path} is not a model or LoRA adapter folder (no config.json or adapter_config.json); "
        "give a run folder, its model/ or checkpoint-N/ folder, or eval.model=base"
    )


def prompt_variant(recipe: Recipe) -> str:
    return recipe.eval.prompt or eval_template(recipe.prompt.template)


def eval_dir(recipe: Recipe, target: Target, prompt: str) -> Path:
    if recipe.eval.name:
        name = recipe.eval.name
    else:  # a custom template is named by its hash: its text may hold '/' and two long ones must not collide
        name = prompt if prompt in TEMPLATES else "custom-" + hashlib.sha1(prompt.encode()).hexdigest()[:8]
        name += "-base" if target.is_base else ""
    return Path(recipe.output_dir) / "eval" / name


def model_type(target: Target) -> str | None:
    """The evaluated model's family ('qwen2_vl', 'qwen2_5_vl', ...): Med-R1's no-think scripts score by it."""
    from transformers import AutoConfig  # lazy: transformers takes seconds to import

    try:
        return AutoConfig.from_pretrained(target.model).model_type
    except (OSError, ValueError):
        return None


def fingerprint(recipe: Recipe, target: Target, prompt: str) -> dict:
    """Everything that decides the predictions; a folder holding results of other settings is never reused."""
    weights = []
    for folder in {p for p in (target.model, target.adapter) if p and Path(p).is_dir()}:
        for file in sorted(Path(folder).glob("*.safetensors")) + sorted(Path(folder).glob("*.bin")):
            stat = file.stat()
            weights.append([str(file), stat.st_size, stat.st_mtime_ns])  # a retrained model is another model
    e, d = recipe.eval, recipe.data
    side, low, high = eval_images(recipe)
    return {
        "model": target.label,
        "adapter": target.adapter,
        "weights": weights,
        "prompt": prompt,
        "system": recipe.prompt.system,
        "data": asdict(d.eval) if d.eval else None,
        "split": asdict(d.split),
        "image_size": side,
        "image_sizing": "square" if side else "native",  # native: qwen-vl-utils' fetch_image (Qwen-VL processors)
        "frames": d.frames,
        "window": d.window,
        "pixels": [low, high],
        "generation": {
            k: getattr(e, k) for k in ("max_new_tokens", "do_sample", "temperature", "top_p", "num_samples", "seed")
        },
    }


def eval_processor(target: Target, recipe: Recipe):
    """The processor evaluation encodes with: the model's own, within the evaluation's pixel bounds (vLLM and
    qwen-vl-utils are given the same bounds)."""
    processor = load_processor(target.processor, trust_remote_code=recipe.model.trust_remote_code)
    apply_pixel_bounds(processor, *eval_images(recipe)[1:])
    return processor


def load_backend(target: Target, recipe: Recipe, out: Path, max_images: int):
    """The generation backend with its processor: vLLM on a GPU when available, else batched transformers."""
    cuda = cuda_available()
    name = pick_backend(recipe.eval.backend, target.model)
    processor = eval_processor(target, recipe)
    dtype = str(resolve_dtype(recipe.model.dtype, cuda)).removeprefix("torch.")
    if name == "vllm" and not target.adapter:
        return VLLMBackend(target.model, processor, recipe.eval, max_images, dtype), name
    auto_class = auto_model_class(target.model, recipe.model.trust_remote_code)  # custom code: its own Auto class
    model = auto_class.from_pretrained(target.model, **pretrained_kwargs(recipe.model, cuda))
    if target.adapter:
        from peft import PeftModel  # lazy: peft imports torch and transformers

        model = PeftModel.from_pretrained(model, target.adapter).merge_and_unload()  # merged: faster generation
        if name == "vllm":  # vLLM reads weights from disk: save the merged model once, beside the results
            merged = out / "merged-model"
            if not (merged / "config.json").exists():
                model.save_pretrained(merged)
                processor.save_pretrained(merged)
            del model
            return VLLMBackend(str(merged), processor, recipe.eval, max_images, dtype), name
    return HFBackend(model.to("cuda" if cuda else "cpu").eval(), processor, recipe.eval), name


def prediction(question: Question, outputs: list[str], prompt: str, medr1_rule: str = "tag") -> dict:
    """One line of predictions.jsonl: the output, what our parser reads (`parsed`, `correct`) and whether Med-R1's
    evaluation script would count it (`correct_medr1`, read by `medr1_rule`: see `medr1_eval_rule`)."""
    kind = question.answer_type
    parsed_all = [_parse(o, question) for o in outputs]
    correct_all = [bool(is_correct(o, question.answer, question.options, kind)) for o in outputs]
    row = {
        "question_id": question.question_id,
        "modality": question.modality,
        "question_type": question.question_type,
        "dataset": question.dataset,
        "answer_type": kind,
        "prompt": prompt,
        "solution": question.answer,
        "output": outputs[0],
        "parsed": parsed_all[0],
        "correct": correct_all[0],
        "correct_medr1": medr1_eval_correct(outputs[0], question.answer, medr1_rule),
    }
    choices = len(question.options) if kind == "choice" else 2 if kind == "closed" else 0
    if choices:
        row["choices"] = choices  # a random guess is right 1 / choices of the time (the table's `chance`)
    if len(outputs) > 1:
        vote = majority(parsed_all)
        row |= {
            "outputs": outputs,
            "parsed_all": parsed_all,
            "correct_all": correct_all,
            "majority_correct": vote is not None and correct_all[parsed_all.index(vote)],
        }
    return row


def _parse(output: str, question: Question) -> str | None:
    extracted = extract_answer(output)
    if question.answer_type == "choice":
        return choice_letter(extracted, question.options)
    text = extracted.text
    if question.answer_type == "closed":
        return yes_no(text)
    return text or None


def evaluate(recipe: Recipe) -> Path:
    target = resolve_target(recipe)
    prompt = prompt_variant(recipe)
    questions = build_plan(recipe, "eval").eval
    out = eval_dir(recipe, target, prompt)
    judge = open_scores.start_judge(recipe)  # a judge that is down fails before any generation
    _claim(out, fingerprint(recipe, target, prompt))
    done = _answered(out / "predictions.jsonl")
    pending = [q for q in questions if q.question_id not in done]
    pending.sort(key=lambda q: -(len(q.question) + sum(map(len, q.options)) + 1000 * len(q.images)))  # less padding
    rule = medr1_eval_rule(prompt, model_type(target))
    logger.info("evaluating %s on %d questions (%d already done) -> %s", target.label, len(questions), len(done), out)
    if pending:
        max_images = max(len(q.images) for q in pending) * max(recipe.data.frames, 1)
        backend, backend_name = load_backend(target, recipe, out, max_images)
        loader = EvalImages(recipe, backend.processor)
        logger.info("images: %s; Med-R1 scorer reads answers by %r", loader.sizing, rule)
        batch_size = recipe.eval.batch_size if backend_name == "hf" else max(recipe.eval.batch_size, 256)
        start, answered = time.perf_counter(), 0
        for i in range(0, len(pending), batch_size):
            batch, conversations, ready = pending[i : i + batch_size], [], []
            for q in batch:
                try:
                    images = loader.load(list(q.images), q.question_id)
                except DataError as exc:
                    logger.warning("%s", exc)
                    append_jsonl(out / "predictions.jsonl", {**prediction(q, [""], prompt, rule), "error": str(exc)})
                    continue
                conversations.append(conversation(q, recipe, prompt, images))
                ready.append(q)
            for q, outputs in zip(ready, backend.generate(conversations) if ready else [], strict=True):
                append_jsonl(out / "predictions.jsonl", prediction(q, outputs, prompt, rule))
            answered += len(batch)
            rate = answered / (time.perf_counter() - start)
            logger.info("%d/%d questions (%.2f questions/s)", len(done) + answered, len(questions), rate)
    if judge is not None:
        open_scores.judge_open(out, questions, judge)
    return write_metrics(out, questions, f"{target.label} | prompt {prompt}", rule, judge)


def write_metrics(out: Path, questions: list[Question], title: str, rule: str = "tag", judge=None) -> Path:
    wanted = {q.question_id for q in questions}
    rows = [r for r in read_jsonl(out / "predictions.jsonl") if r["question_id"] in wanted]
    metrics = summarize(rows) | {"medr1_scoring": MEDR1_RULES[rule]}
    open_section = open_scores.open_section(rows, out, judge)  # exact match, token F1 (and judged) of open answers
    if open_section:
        metrics["open"] = open_section
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "metrics.md", to_markdown(metrics, title) + open_scores.to_markdown(open_section))
    return out


def _answered(path: Path) -> set[str]:
    """Questions already answered; rows that failed on an unreadable image are dropped so they are tried again."""
    rows = read_jsonl(path, repair=True)
    failed = [r for r in rows if "error" in r]
    if failed:
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows if "error" not in r))
    return {r["question_id"] for r in rows if "error" not in r}


def _claim(out: Path, settings: dict, rename: str = "Set eval.name=<new name>") -> None:
    """Refuse to mix two different evaluations in one folder; record what this one is.

    A folder whose recorded settings differ but that holds no results yet (an evaluation that failed before its first
    answer) is taken over, so a failed run never blocks its corrected retry. A folder holding files of something
    else is refused. `rename` says how to pick another folder.
    """
    path = out / "eval_config.json"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder for results; {rename}, or move the file away")
    results = (
        [f for f in out.iterdir() if f.name != path.name and (f.is_dir() or f.stat().st_size)] if out.is_dir() else []
    )
    settings = json.loads(json.dumps(settings))
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = None
        if before != settings and results:
            changed = sorted(k for k in set(before or {}) | set(settings) if (before or {}).get(k) != settings.get(k))
            raise UserError(
                f"{out} holds results of a different evaluation (changed: {', '.join(changed)}); nothing was "
                f"overwritten. {rename}, or move that folder away to redo it."
            )
        if before != settings:
            logger.info(
                "%s: an earlier evaluation with other settings stopped before any result; starting afresh", out
            )
    elif results:
        raise UserError(
            f"{out} already holds files ({', '.join(sorted(f.name for f in results)[:3])}) that are no results of "
            f"med-r1's; nothing was overwritten. {rename}, or empty that folder."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the results folder {out}: {exc.strerror or exc}; {rename}") from None
    atomic_write_json(path, settings)


def conversation(question: Question, recipe: Recipe, prompt: str, images: list) -> list[dict]:
    """The chat a question is asked in: the recipe's system prompt, then the images and the `prompt` template's text
    in one user turn (as Med-R1's evaluation scripts and TRL's training rows both put them)."""
    from trl.data_utils import prepare_multimodal_messages  # lazy: trl imports torch

    return prepare_multimodal_messages(build_prompt(question, replace(recipe.prompt, template=prompt)), images)
