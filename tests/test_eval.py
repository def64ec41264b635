"""`med-r1 eval`, `matrix` and `compare` on the tiny model: counts add up, reward and metric agree, resume is exact."""

import json
from pathlib import Path

import pytest

from conftest import make_medr1_splits, tiny_recipe, write_recipe
from med_r1.cli import main
from med_r1.config import DataSource, load_recipe, parse_recipe
from med_r1.data.sources import load_source
from med_r1.eval.generate import encode
from med_r1.eval.images import EvalImages
from med_r1.eval.metrics import summarize
from med_r1.eval.run import conversation, eval_processor, prediction, resolve_target
from med_r1.matrix import domains
from med_r1.model import apply_pixel_bounds, load_processor, pixel_bounds
from med_r1.prompts import TEMPLATES, format_problem
from med_r1.records import Question
from med_r1.rewards import get_reward


def eval_recipe(tiny_model, omni_dir, out, **eval_config) -> dict:
    recipe = tiny_recipe(tiny_model, omni_dir, out)
    recipe["data"]["eval"] = {"path": str(omni_dir)}
    recipe["eval"] = {"max_new_tokens": 12, "batch_size": 5, **eval_config}
    return recipe


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_eval_writes_predictions_and_metrics_that_add_up(tiny_model, omni_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    out = tmp_path / "run" / "eval" / "medr1_eval_think-base"
    predictions = lines(out / "predictions.jsonl")
    assert sorted(p["question_id"] for p in predictions) == sorted(
        f"Set {m} & Co_{i:04d}" for m in range(4) for i in range(4)
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["count"] == 16
    for group in ("by_modality", "by_question_type", "by_dataset"):
        assert sum(cell["count"] for cell in metrics[group].values()) == 16
    assert set(metrics["by_modality"]) == {"CT", "MRI", "X-Ray", "Fundus"}
    md = (out / "metrics.md").read_text()
    assert "| CT |" in md and "accuracy (Med-R1)" in md and "by Med-R1's scorer" in md
    medr1 = sum(p["correct_medr1"] for p in predictions)  # Med-R1's think script: first <answer>\s*(\w+)\s*</answer>
    assert metrics["overall"]["correct_medr1"] == medr1 and metrics["overall"]["accuracy_medr1"] == medr1 / 16
    assert sum(cell["correct_medr1"] for cell in metrics["by_modality"].values()) == medr1
    assert metrics["medr1_scoring"].startswith("the first <answer>")

    accuracy = get_reward("accuracy")
    rewards = accuracy(
        completions=[[{"role": "assistant", "content": p["output"]}] for p in predictions],
        solution=[p["solution"] for p in predictions],
        options=[["red", "green", "blue", "yellow"]] * len(predictions),
        answer_type=[p["answer_type"] for p in predictions],
    )
    assert [r == 1.0 for r in rewards] == [p["correct"] for p in predictions]
    assert all(p["prompt"] == "medr1_eval_think" for p in predictions)


@pytest.mark.parametrize(
    "output",
    ["<answer>B</answer>", "<answer>\nB\n</answer>", "<answer>green</answer>", "<answer>A</answer>", "B", "", "(b)"],
)
def test_metric_and_reward_agree_question_by_question(output):
    question = Question("q", "d", ("x.png",), "What colour?", ("red", "green"), "B", "CT", "Modality Recognition")
    reward = get_reward("accuracy")(completions=[output], solution=["B"], options=[["red", "green"]])
    assert prediction(question, [output], "p")["correct"] == (reward == [1.0])


@pytest.mark.parametrize(
    "output, parsed, correct, medr1",
    [
        ("<answer>B</answer>", "B", True, True),
        ("<answer>B) green</answer>", "B", True, False),  # Med-R1's regex takes one word only
        ("<answer>B</answer> <answer>A</answer>", None, False, True),  # disagreeing tags: unparseable; Med-R1: first
        ("<answer>A or B</answer>", None, False, False),
        ("<answer><answer>B</answer></answer>", "B", True, True),
    ],
)
def test_predictions_carry_both_scorers(output, parsed, correct, medr1):
    question = Question("q", "d", ("x.png",), "What colour?", ("red", "green"), "B", "CT", "Modality Recognition")
    row = prediction(question, [output], "medr1_eval_think", "tag")
    assert (row["parsed"], row["correct"], row["correct_medr1"]) == (parsed, correct, medr1)


def bundled_questions() -> list[Question]:
    """One question per bundled image (47 images: PNG and JPEG, grey and colour, square and not, 102-384 px)."""
    by_image = {}
    for q in load_source(DataSource(path="bundled")).questions:
        by_image.setdefault(q.images[0], q)
    return [by_image[image] for image in sorted(by_image)]


def test_native_evaluation_gives_the_image_tokens_of_medr1s_own_script(tiny_model, tmp_path):
    import torch
    from qwen_vl_utils import process_vision_info

    raw = {
        "model": {"name_or_path": str(tiny_model), "min_pixels": 3136, "max_pixels": 401408},
        "data": {"train": {"path": "bundled"}, "eval": {"path": "bundled"}, "image_size": 384},
        "output_dir": str(tmp_path),
        "eval": {"model": "base", "image_size": "native", "min_pixels": 3136, "max_pixels": 12845056},
    }
    recipe, prompt = parse_recipe(raw), "medr1_eval_think"
    processor = eval_processor(resolve_target(recipe), recipe)
    assert pixel_bounds(processor) == {"min_pixels": 3136, "max_pixels": 12845056}  # what vLLM is given too
    images = EvalImages(recipe, processor)
    assert images.sizing == "qwen-vl-utils"
    # Med-R1's src/eval_vqa/test_qwen2vl_vqa.py: file:// paths, process_vision_info, the processor as the model
    # ships it (Qwen2-VL-2B-Instruct: 3136 - 12845056 pixels), the template filled with the `problem` string.
    theirs = load_processor(str(tiny_model))
    apply_pixel_bounds(theirs, 3136, 12845056)
    training = EvalImages(
        parse_recipe({**raw, "eval": {"model": "base"}}),
        eval_processor(resolve_target(recipe), parse_recipe({**raw, "eval": {"model": "base"}})),
    )
    assert training.sizing == "square"
    differ = 0
    for q in bundled_questions():
        ours = encode(processor, [conversation(q, recipe, prompt, images.load(list(q.images), q.question_id))])
        text = TEMPLATES[prompt].format(Question=format_problem(q.question, q.options))
        message = [
            {
                "role": "user",
                "content": [{"type": "image", "image": f"file://{q.images[0]}"}, {"type": "text", "text": text}],
            }
        ]
        image_inputs, video_inputs = process_vision_info([message])
        reference = theirs(
            text=[theirs.apply_chat_template(message, tokenize=False, add_generation_prompt=True)],
            images=image_inputs,
            videos=video_inputs,
            padding=True,
            return_tensors="pt",
        )
        assert torch.equal(ours["image_grid_thw"], reference["image_grid_thw"]), q.images[0]
        assert torch.equal(ours["input_ids"], reference["input_ids"]), q.images[0]  # image tokens and text alike
        assert torch.equal(ours["pixel_values"], reference["pixel_values"]), q.images[0]
        square = encode(
            training.processor, [conversation(q, recipe, prompt, training.load(list(q.images), q.question_id))]
        )
        differ += not torch.equal(square["image_grid_thw"], reference["image_grid_thw"])
    assert differ >= 20  # the training protocol (384x384 squares) is another evaluation for most of them


@pytest.mark.slow
def test_interrupted_eval_resumes_with_one_line_per_question(tiny_model, omni_dir, tmp_path, monkeypatch):
    from med_r1.eval import generate

    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    real = generate.HFBackend.generate
    calls = {"n": 0}

    def dies_after_two_batches(self, conversations):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-run
        return real(self, conversations)

    monkeypatch.setattr(generate.HFBackend, "generate", dies_after_two_batches)
    assert main(["eval", str(recipe), "eval.model=base"]) == 130
    path = tmp_path / "run" / "eval" / "medr1_eval_think-base" / "predictions.jsonl"
    written = path.read_text().splitlines()
    assert len(written) == 10
    with open(path, "a") as f:
        f.write('{"question_id": "Set 3 & Co_00')  # a torn last line, as if killed mid-write

    monkeypatch.setattr(generate.HFBackend, "generate", real)
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    ids = [p["question_id"] for p in lines(path)]
    assert len(ids) == len(set(ids)) == 16
    assert path.read_text().splitlines()[:10] == written  # earlier answers kept as they were


@pytest.mark.slow
def test_sampling_reports_pass_at_k_and_majority(tiny_model, omni_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    assert (
        main(
            ["eval", str(recipe), "eval.model=base", "eval.do_sample=true", "eval.num_samples=3", "eval.name=sampled"]
        )
        == 0
    )
    out = tmp_path / "run" / "eval" / "sampled"
    overall = json.loads((out / "metrics.json").read_text())["overall"]
    assert {"pass@3", "majority@3", "mean_sample_accuracy"} <= overall.keys()
    assert all(len(p["outputs"]) == 3 for p in lines(out / "predictions.jsonl"))


@pytest.mark.slow
def test_eval_of_a_lora_run_and_compare(tiny_model, omni_dir, tmp_path, capsys):
    raw = eval_recipe(tiny_model, omni_dir, tmp_path / "run")
    raw["model"].update(finetune="lora", lora={"r": 4})
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    assert main(["train", str(recipe)]) == 0
    assert main(["eval", str(recipe)]) == 0  # the run's adapter on its base
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    run = tmp_path / "run"
    settings = json.loads((run / "eval" / "medr1_eval_think" / "eval_config.json").read_text())
    assert settings["adapter"].endswith("run/model")
    capsys.readouterr()
    assert main(["compare", str(run / "eval" / "medr1_eval_think-base"), str(run / "eval" / "medr1_eval_think")]) == 0
    out = capsys.readouterr().out
    assert "| CT |" in out and "95% CI of B - A |" in out and "95% CI of B - A (Med-R1) |" in out
    assert main(["compare", str(run), str(run)]) == 2  # two evaluations in the run: ambiguous without --eval


def write_eval(folder: Path, right: dict[str, bool]) -> Path:
    """An eval folder as `med-r1 eval` leaves it: q1-q4 are CT questions, q5-q8 MRI ones; `right` says which of them
    this evaluation answered, and whether correctly."""
    rows = [
        {"question_id": q, "modality": "CT" if int(q[1:]) <= 4 else "MRI", "question_type": "Diagnosis",
         "dataset": "set", "parsed": "A", "correct": ok, "correct_medr1": ok}
        for q, ok in right.items()
    ]  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "metrics.json").write_text(json.dumps(summarize(rows)))
    return folder


def test_compare_of_different_questions_warns_and_compares_the_common_ones(tmp_path, capsys):
    a = write_eval(tmp_path / "a", {"q1": True, "q2": True, "q3": False, "q4": True, "q5": False, "q6": True})
    b = write_eval(tmp_path / "b", {"q3": True, "q4": True, "q5": True, "q6": True, "q7": False, "q8": False})
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2] == (
        "warning: A and B evaluated different questions: 2 only in A, 2 only in B, 4 common; every table below "
        "compares the 4 common questions only"
    )
    rows = {line.split(" | ")[0]: line for line in out if line.startswith("| ") and "%" in line}
    # On all their questions A has CT 3/4 and B MRI 2/4; on the common ones (q3-q6) A has 1/2 of each, B 2/2.
    assert rows["| all"].startswith("| all | 50.0% | 100.0% | +50.0 |") and rows["| all"].endswith(" 4/4 |")
    for domain in ("CT", "MRI"):
        assert rows[f"| {domain}"].startswith(f"| {domain} | 50.0% | 100.0% | +50.0 |")
        assert rows[f"| {domain}"].endswith(" 2/2 |")
    assert main(["compare", str(a), str(a)]) == 0  # the same questions: no warning
    assert "warning" not in capsys.readouterr().out
    c = write_eval(tmp_path / "c", {"q7": True, "q8": False})
    assert main(["compare", str(tmp_path / "a" / "metrics.json"), str(c)]) == 2
    err = capsys.readouterr().err
    assert "evaluated no question in common (6 in A, e.g. 'q1'; 2 in B, e.g. 'q7')" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "override, needle",
    [
        ("eval.model={tmp}", "is not a model or LoRA adapter folder"),
        ("data.eval.modalities=[OCT]", "'OCT' matches no question"),
        ("eval.prompt=medr1_eval_thnk", "did you mean 'medr1_eval_think'"),
    ],
)
def test_eval_bad_input_exits_2(tiny_model, omni_dir, tmp_path, capsys, override, needle):
    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    assert main(["eval", str(recipe), override.format(tmp=tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.slow
def test_matrix_over_two_domains_then_nothing_new(tiny_model, omni_dir, tmp_path, monkeypatch, capsys):
    raw = eval_recipe(tiny_model, omni_dir, tmp_path / "mx")
    raw["data"]["train"]["split"] = "train"
    raw["data"]["eval"]["split"] = "test"
    raw["data"]["split"] = {"by": "image", "test_ratio": 0.5, "seed": 1}
    raw["matrix"] = {"axis": "modality", "train_domains": ["CT", "MRI"], "metric": "accuracy_medr1"}
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    assert main(["matrix", str(recipe)]) == 0
    out = tmp_path / "mx"
    csv_rows = (out / "matrix.csv").read_text().splitlines()
    assert csv_rows[0].startswith("trained_on,") and [r.split(",")[0] for r in csv_rows[1:]] == ["base", "CT", "MRI"]
    tables = json.loads((out / "matrix.json").read_text())
    assert tables["metric"] == "accuracy_medr1" and tables["accuracy"].keys() == tables["accuracy_medr1"].keys()
    shown = [float(x) for x in csv_rows[1].split(",")[1:] if x]  # the heatmap's metric: Med-R1's scorer
    assert shown == [round(100 * v, 2) for v in tables["accuracy_medr1"]["base"].values() if v is not None]
    assert (out / "matrix.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "matrix_delta.png").read_bytes().startswith(b"\x89PNG")
    md = (out / "matrix.md").read_text()
    assert "by image (no image in both train and test)" in md and "Improvement over the base model" in md
    assert md.index("(`accuracy_medr1`)") < md.index("(`accuracy`)")  # both tables, the chosen one first

    import med_r1.eval.run as run
    import med_r1.train as train

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(train, "train", must_not_run)
    monkeypatch.setattr(run, "evaluate", must_not_run)
    capsys.readouterr()
    assert main(["matrix", str(recipe), "--dry-run"]) == 0
    assert "to run: 0 trainings, 0 evaluations" in capsys.readouterr().out
    assert main(["matrix", str(recipe)]) == 0


@pytest.mark.slow
def test_results_of_other_settings_are_never_reused(tiny_model, omni_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    assert main(["eval", str(recipe), "eval.model=base", "eval.max_new_tokens=4"]) == 2
    assert "changed: generation" in capsys.readouterr().err


@pytest.mark.slow
def test_rows_that_failed_on_an_image_are_retried(tiny_model, omni_dir, tmp_path):
    image = omni_dir / "Images" / "Set 1 & Co" / "img (2).png"
    good = image.read_bytes()
    image.write_bytes(b"not an image")
    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    path = tmp_path / "run" / "eval" / "medr1_eval_think-base" / "predictions.jsonl"
    assert [r["question_id"] for r in lines(path) if "error" in r] == ["Set 1 & Co_0002"]
    metrics = json.loads(path.with_name("metrics.json").read_text())
    assert metrics["overall"]["count"] == 15 and metrics["overall"]["errors"] == 1
    image.write_bytes(good)
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    rows = lines(path)
    assert len(rows) == 16 and not any("error" in r for r in rows)


@pytest.mark.slow
def test_matrix_refuses_cells_trained_with_another_recipe(tiny_model, omni_dir, tmp_path, capsys):
    raw = eval_recipe(tiny_model, omni_dir, tmp_path / "mx")
    raw["grpo"]["max_steps"] = 1
    raw["matrix"] = {"train_domains": ["CT"], "baseline": False}
    recipe = str(write_recipe(tmp_path / "r.yaml", raw))
    assert main(["matrix", recipe]) == 0
    assert main(["matrix", recipe, "grpo.learning_rate=0.5"]) == 2
    err = capsys.readouterr().err
    assert "train-ct" in err and "grpo.learning_rate" in err


def test_matrix_plan_skips_domains_with_too_few_questions(tmp_path, capsys):
    root = make_medr1_splits(tmp_path)
    omni, splits = root / "OmniMedVQA", root / "Splits" / "modality"
    overrides = [
        f"data.train.path={splits / 'train'}",
        f"data.train.image_root={omni}",
        f"data.eval.path={splits / 'test'}",
        f"data.eval.image_root={omni}",
        f"output_dir={tmp_path / 'mx'}",
    ]
    assert (
        main(["matrix", "--dry-run", "recipes/med-r1/cross_modality.yaml", *overrides, "matrix.min_questions=5"]) == 0
    )
    out = capsys.readouterr().out
    assert "skipped (fewer than matrix.min_questions=5 training questions): unknown (1)" in out
    assert "train-x-ray" in out and "train-unknown" not in out and "2 training domains x 2 test domains" in out
    assert "heatmaps and matrix.csv show: accuracy_medr1" in out
    # default 50: no training domain is left, which stops before anything runs, naming the counts
    assert main(["matrix", "--dry-run", "recipes/med-r1/cross_modality.yaml", *overrides]) == 2
    err = capsys.readouterr().err
    assert "no training domain has matrix.min_questions=50" in err and "CT 6, X-Ray 6, unknown 1" in err


def test_matrix_refuses_a_domain_named_twice_in_any_spelling(tmp_path, capsys):
    root = make_medr1_splits(tmp_path)
    omni, splits = root / "OmniMedVQA", root / "Splits" / "modality"
    overrides = [
        f"data.train.path={splits / 'train'}",
        f"data.train.image_root={omni}",
        f"data.eval.path={splits / 'test'}",
        f"data.eval.image_root={omni}",
        f"output_dir={tmp_path / 'mx'}",
        "matrix.min_questions=5",
    ]
    recipe = "recipes/med-r1/cross_modality.yaml"
    twice = ["matrix.train_domains=[CT, xray, X-Ray]", "matrix.test_domains=[CT, ct]"]
    assert main(["matrix", "--dry-run", recipe, *overrides, *twice]) == 2
    err = capsys.readouterr().err
    assert "matrix.train_domains: 'xray' and 'X-Ray' (both the modality 'X-Ray')" in err
    assert "matrix.test_domains: 'CT' and 'ct' (both the modality 'CT')" in err and "Traceback" not in err
    assert main(["matrix", recipe, *overrides, "matrix.train_domains=[CT, CT]"]) == 2  # refused before any run
    assert "'CT' is listed twice" in capsys.readouterr().err and not (tmp_path / "mx").exists()
    # Aliases that name different domains are fine, and a column asked for by an alias shows its canonical results.
    assert main(["matrix", "--dry-run", recipe, *overrides, "matrix.test_domains=[xray, ct]"]) == 0
    recipe_ = load_recipe(recipe, [*overrides, "matrix.test_domains=[xray, ct]"])
    assert domains(recipe_, [], [])[1] == ["X-Ray", "CT"]


@pytest.mark.slow
def test_eval_on_medr1_split_files_native_or_square_scored_both_ways(tiny_model, tmp_path, monkeypatch):
    """Med-R1's own files (paths with spaces, images of many sizes): native images reach the model smart-resized
    within the pixel bounds, square ones at eval.image_size; the zero-shot prompt is scored on the raw output (only a
    bare letter counts), the think prompt on the first answer tag, our parser credits both."""
    from med_r1.eval import generate

    root = make_medr1_splits(tmp_path)
    splits, omni = root / "Splits" / "modality", str(root / "OmniMedVQA")
    raw = tiny_recipe(tiny_model, splits / "train", tmp_path / "run")
    raw["data"] = {
        "train": {"path": str(splits / "train"), "format": "medr1", "image_root": omni},
        "eval": {"path": str(splits / "test"), "format": "medr1", "image_root": omni},
        "image_size": 384,
    }
    raw["eval"] = {"model": "base", "max_new_tokens": 4, "min_pixels": 3136, "max_pixels": 12845056}
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    seen: list[tuple[int, int]] = []

    def bare_or_tagged(self, conversations):
        seen.extend(image.size for c in conversations for image in generate.message_images(c))
        return [["B"] if len(seen) % 2 else ["<answer>B</answer>"] for _ in conversations]

    monkeypatch.setattr(generate.HFBackend, "generate", bare_or_tagged)
    runs = {"zeroshot": ("medr1_zeroshot", "native"), "square": ("medr1_eval_think", "384")}
    for name, (prompt, size) in runs.items():
        seen.clear()
        args = [f"eval.name={name}", f"eval.prompt={prompt}", f"eval.image_size={size}", "eval.batch_size=1"]
        assert main(["eval", str(recipe), *args]) == 0
        rows = lines(tmp_path / "run" / "eval" / name / "predictions.jsonl")
        assert len(rows) == len(seen) == 10
        if size == "native":
            assert all(w % 28 == 0 and h % 28 == 0 and w * h >= 3136 for w, h in seen) and (384, 384) not in seen
        else:
            assert set(seen) == {(384, 384)}
        assert {r["output"] for r in rows if r["solution"] == "B"} == {"B", "<answer>B</answer>"}  # both forms scored
        for row in rows:
            gold_b = row["solution"] == "B"
            assert row["correct"] == gold_b  # "B" and "<answer>B</answer>" alike
            counted = row["output"] == "B" if prompt == "medr1_zeroshot" else row["output"] == "<answer>B</answer>"
            assert row["correct_medr1"] == (gold_b and counted), row
        metrics = json.loads((tmp_path / "run" / "eval" / name / "metrics.json").read_text())
        assert metrics["medr1_scoring"].startswith("the raw output" if size == "native" else "the first <answer>")
        assert metrics["overall"]["correct_medr1"] == sum(r["correct_medr1"] for r in rows)


def test_tables_show_what_guessing_would_score():
    """`chance`: the mean of 1 / number of options over a cell's questions (1/2 for yes/no), beside the accuracy;
    left out where a cell holds open questions, whose answers cannot be guessed from a list."""
    from med_r1.eval.metrics import summarize, to_markdown

    def q(qid, options, modality, kind="choice"):
        return Question(qid, "d", ("x.png",), "?", options, "A" if options else "x", modality, "t", kind)

    rows = [
        prediction(q("a", ("x", "y"), "CT"), ["<answer>A</answer>"], "p"),
        prediction(q("b", ("x", "y", "z", "w"), "CT"), ["<answer>B</answer>"], "p"),
        prediction(q("c", (), "MRI", "closed"), ["no"], "p"),
        prediction(q("d", (), "OCT", "open"), ["x"], "p"),
    ]
    metrics = summarize(rows)
    assert metrics["by_modality"]["CT"]["chance"] == (1 / 2 + 1 / 4) / 2
    assert metrics["by_modality"]["MRI"]["chance"] == 1 / 2
    assert "chance" not in metrics["by_modality"]["OCT"] and "chance" not in metrics["overall"]
    choice_only = summarize(rows[:2])
    assert choice_only["overall"]["chance"] == 0.375
    md = to_markdown(choice_only)
    assert "; chance 37.5%)" in md and "| n | unparseable | chance |" in md and "| CT | 50.0% |" in md
