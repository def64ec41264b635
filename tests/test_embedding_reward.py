"""The `embedding_similarity` reward on a tiny BERT built in code: identical answers score 1, batching changes nothing,
references are embedded once, a bad encoder is a UserError naming the key; through `med-r1 rewards check`, training
and `med-r1 eval` with `eval.open_scorer: embedding`."""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

import pytest

from conftest import tiny_recipe, write_recipe
from med_r1.cli import main
from med_r1.rewards.embedding import EmbeddingSettings, embedding_similarity_reward, get_encoder

WORDS = (
    "the a an of in on left right upper lower lung liver kidney heart brain mass nodule effusion fracture normal "
    "enlarged small large no yes there is are red green blue yellow colour image shows"
).split()


def build_tiny_encoder(out: Path, seed: int = 0) -> Path:
    """A 2-layer BERT of width 32 with a word-level tokenizer, built offline."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    ).save_pretrained(out)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> str:
    return str(build_tiny_encoder(tmp_path_factory.mktemp("encoder") / "tiny-bert"))


def score(texts, references, encoder, kinds=None, **kwargs):
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    kinds = kinds or ["open"] * len(texts)
    return embedding_similarity_reward(completions, references, answer_type=kinds, encoder=encoder, **kwargs)


def test_docstring_examples_run():
    result = doctest.testmod(importlib.import_module("med_r1.rewards.embedding"))
    assert result.failed == 0 and result.attempted > 0


def test_an_identical_answer_scores_one_and_beats_an_unrelated_one(encoder):
    reference = "an enlarged liver with a small mass"
    same, unrelated, near = score(
        [
            f"<think>looking</think><answer>{reference}</answer>",
            "<answer>the brain is normal</answer>",
            "<answer>a small mass in the enlarged liver</answer>",
        ],
        [reference] * 3,
        encoder,
    )
    assert same == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= unrelated < same and 0.0 <= near < same
    # floor maps similarity to [0, 1] above it: a higher floor lowers every score below 1, never raises one
    floored = score(["<answer>the brain is normal</answer>"], [reference], encoder, floor=0.5)[0]
    assert floored <= unrelated and 0.0 <= floored


def test_no_answer_scores_zero_and_other_rows_use_the_parser(encoder):
    texts = ["<think>hm, the liver</think>", "<answer></answer>", "<answer>B</answer>", "<answer>Yes.</answer>"]
    scores = score(texts, ["the liver", "the liver", "B", "no"], encoder, kinds=["open", "open", "choice", "closed"])
    assert scores == [0.0, 0.0, 1.0, 0.0]


def test_batching_gives_the_scores_one_by_one_gives(encoder):
    answers = [
        "<answer>left lung nodule</answer>",
        "<answer>there is a large effusion in the right lung</answer>",
        "<answer>normal</answer>",
        "<answer>a fracture of the upper left</answer>",
        "<answer>left lung nodule</answer>",
    ]
    references = ["a nodule in the left lung", "effusion", "normal heart", "fracture", "the kidney is small"]
    together = score(answers, references, encoder, batch_size=8)
    alone = [score([a], [r], encoder, batch_size=1)[0] for a, r in zip(answers, references, strict=True)]
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(round(s, 4) for s in together)) > 2  # the scores tell answers apart


def test_references_are_embedded_once_per_process(encoder):
    model = get_encoder(EmbeddingSettings(encoder, batch_size=64)).model  # the model the reward below uses
    texts_seen: list[int] = []  # texts per forward pass of the real model
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: texts_seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        references = ["the heart is enlarged", "a mass in the brain"] * 3
        answers = [f"<answer>{w} heart</answer>" for w in ("small", "large", "normal", "enlarged", "red", "no")]
        first = score(answers, references, encoder, batch_size=64)
        assert texts_seen == [6, 2]  # the distinct answers, then the two distinct references
        second = score(answers, references, encoder, batch_size=64)
        assert texts_seen == [6, 2, 6]  # the references came from the cache: no forward pass for them
        assert second == pytest.approx(first, abs=1e-6)
        score(answers[:2] * 3, references, encoder, batch_size=64)
        assert texts_seen == [6, 2, 6, 2]  # repeated answers in one batch are embedded once too
    finally:
        hook.remove()


def test_a_bad_encoder_is_a_user_error_naming_the_key(tmp_path, capsys):
    missing = tmp_path / "no-such-encoder"
    args = ["rewards", "check", "embedding_similarity", "--completion", "<answer>liver</answer>", "--solution"]
    assert main([*args, "the liver", "--kwarg", f"encoder={missing}"]) == 2
    err = capsys.readouterr().err
    assert "kwargs.encoder" in err and str(missing) in err and "Traceback" not in err
    missing.mkdir()  # a folder, but no model in it
    assert main([*args, "the liver", "--kwarg", f"encoder={missing}"]) == 2
    assert f"kwargs.encoder: cannot load the text encoder '{missing}'" in capsys.readouterr().err
    assert main([*args, "the liver"]) == 2  # no encoder at all
    assert "kwargs.encoder: name a text encoder" in capsys.readouterr().err


def test_rewards_check_scores_one_completion(encoder, capsys):
    args = [
        "rewards",
        "check",
        "embedding_similarity",
        "--kwarg",
        f"encoder={encoder}",
        "--solution",
        "left lung mass",
    ]
    assert main([*args, "--completion", "<answer>left lung mass</answer>"]) == 0
    assert float(capsys.readouterr().out.strip()) == pytest.approx(1.0, abs=1e-5)
    assert main([*args, "--completion", "<answer>yellow colour image</answer>"]) == 0
    assert float(capsys.readouterr().out.strip()) < 0.999


def open_recipe(tiny_model, omni_dir, out, **section) -> dict:
    recipe = tiny_recipe(tiny_model, omni_dir, out)
    recipe["data"]["train"]["open_ended"] = True
    recipe["data"]["eval"] = {"path": str(omni_dir), "open_ended": True, "limit": 6}
    recipe["eval"] = {"max_new_tokens": 6, "batch_size": 6, **section}
    return recipe


@pytest.mark.slow
def test_trains_on_open_ended_data(tiny_model, omni_dir, encoder, tmp_path):
    recipe = open_recipe(tiny_model, omni_dir, tmp_path / "run")
    recipe["rewards"] = [{"name": "format_partial"}, {"name": "embedding_similarity", "kwargs": {"encoder": encoder}}]
    assert main(["train", str(write_recipe(tmp_path / "r.yaml", recipe))]) == 0
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    means = [
        line["rewards/embedding_similarity/mean"] for line in logged if "rewards/embedding_similarity/mean" in line
    ]
    assert means and all(0.0 <= m <= 1.0 for m in means)


@pytest.mark.slow
def test_a_bad_encoder_fails_before_training(tiny_model, omni_dir, tmp_path, capsys):
    recipe = open_recipe(tiny_model, omni_dir, tmp_path / "run")
    missing = tmp_path / "no-encoder"
    recipe["rewards"] = [{"name": "embedding_similarity", "kwargs": {"encoder": str(missing)}}]
    assert main(["validate", str(write_recipe(tmp_path / "r.yaml", recipe))]) == 2
    err = capsys.readouterr().err
    assert f"kwargs.encoder: {missing} does not exist" in err


@pytest.mark.slow
def test_eval_scores_open_answers_by_embedding_similarity(tiny_model, omni_dir, encoder, tmp_path):
    recipe = open_recipe(tiny_model, omni_dir, tmp_path / "run", open_scorer="embedding")
    recipe["eval"]["embedding"] = {"encoder": encoder}
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert main(["eval", str(path), "eval.model=base"]) == 0
    out = next((tmp_path / "run" / "eval").iterdir())
    predictions = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    scored = {
        r["question_id"]: r["score"] for r in map(json.loads, (out / "similarity.jsonl").read_text().splitlines())
    }
    assert len(predictions) == len(scored) == 6 and all(p["answer_type"] == "open" for p in predictions)
    # reward = evaluation: each stored score is what the reward gives the same output
    expected = score([p["output"] for p in predictions], [p["solution"] for p in predictions], encoder)
    assert [scored[p["question_id"]] for p in predictions] == pytest.approx(expected, abs=1e-5)
    assert any(s > 0 for s in expected), expected  # some outputs were compared, not all empty
    overall = json.loads((out / "metrics.json").read_text())["open"]["overall"]
    assert set(overall) == {"count", "exact_match", "token_f1", "embedding_similarity"}
    assert overall["embedding_similarity"] == pytest.approx(sum(expected) / 6, abs=1e-5)
    assert "embedding similarity" in (out / "metrics.md").read_text()
    # again: nothing new to score, the same lines
    assert main(["eval", str(path), "eval.model=base"]) == 0
    assert len((out / "similarity.jsonl").read_text().splitlines()) == 6


@pytest.mark.slow
def test_eval_needs_an_encoder_and_a_bad_one_fails_before_generation(tiny_model, omni_dir, tmp_path, capsys):
    recipe = open_recipe(tiny_model, omni_dir, tmp_path / "run", open_scorer="embedding")
    assert main(["eval", str(write_recipe(tmp_path / "r.yaml", recipe)), "eval.model=base"]) == 2
    assert "eval.open_scorer: embedding needs an encoder" in capsys.readouterr().err
    recipe["eval"]["embedding"] = {"encoder": str(tmp_path / "missing")}
    assert main(["eval", str(write_recipe(tmp_path / "r.yaml", recipe)), "eval.model=base"]) == 2
    assert f"eval.embedding.encoder: {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    assert not list((tmp_path / "run").glob("eval/*/predictions.jsonl"))
