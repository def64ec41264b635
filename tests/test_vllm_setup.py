"""What med-r1 decides about vLLM before any engine starts; runs everywhere (test_vllm.py runs the engines)."""

from types import SimpleNamespace

import pytest
from transformers import AutoConfig, Qwen2VLConfig

from conftest import tiny_recipe, write_recipe
from med_r1 import vllm_engine
from med_r1.cli import main
from med_r1.model import cuda_available
from med_r1.tiny import ARCHS, build_tiny_qwen2vl

NO_VLLM = vllm_engine.installed_build() is None


def test_head_sizes_the_cpu_kernels_refuse_are_named():
    small = Qwen2VLConfig(text_config={"hidden_size": 64, "num_attention_heads": 4})  # heads of 16
    problem = vllm_engine.head_size_problem(small, "eval.backend=vllm")
    assert problem.startswith("eval.backend=vllm:") and "is 16" in problem and "32, 64" in problem
    qwen2vl_2b = Qwen2VLConfig(text_config={"hidden_size": 1536, "num_attention_heads": 12})  # Qwen2-VL-2B: 128
    assert vllm_engine.head_size(qwen2vl_2b) == 128 and vllm_engine.head_size_problem(qwen2vl_2b, "x") is None


@pytest.mark.parametrize("arch", ARCHS)
def test_the_builtin_tiny_models_run_on_vllms_cpu_kernels(arch, tmp_path):
    config = AutoConfig.from_pretrained(build_tiny_qwen2vl(tmp_path / arch, arch=arch))
    assert vllm_engine.head_size(config) in vllm_engine.CPU_HEAD_SIZES


def test_kv_cache_is_sized_for_the_sequences_it_holds():
    qwen2vl_2b = Qwen2VLConfig(
        text_config={"hidden_size": 1536, "num_attention_heads": 12, "num_key_value_heads": 2, "num_hidden_layers": 28}
    )
    # 2 (K, V) x 28 layers x 2 heads x 128 x 2 bytes = 28 KiB a token; 8 sequences of 32k tokens = 7 GiB, + 10%.
    assert vllm_engine.kv_cache_bytes_per_token(qwen2vl_2b, 2) == 28 * 1024
    assert vllm_engine.kv_cache_gib(qwen2vl_2b, 32768, 8, 2) == 8
    tiny = Qwen2VLConfig(text_config={"hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1})
    assert vllm_engine.kv_cache_gib(tiny, 4096, 8, 4) == 1  # never below 1 GiB


def test_cpu_settings_never_override_the_users(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    for key in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        monkeypatch.delenv(key, raising=False)
    applied = vllm_engine.cpu_environment(2)
    assert "VLLM_CPU_KVCACHE_SPACE" not in applied and applied["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    import os

    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "7"


def test_placeholders_are_never_sampled_and_a_recipes_bias_is_kept(tiny_model):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    image, video = processor.image_token_id, processor.video_token_id
    args = SimpleNamespace(generation_kwargs={"logit_bias": {str(video): 5.0}, "min_tokens": 2})
    vllm_engine.suppress_placeholders(args, processor)
    assert args.generation_kwargs == {"logit_bias": {str(video): 5.0, image: -100.0}, "min_tokens": 2}


@pytest.mark.skipif(not NO_VLLM, reason="vLLM is installed here")
def test_without_vllm_training_on_it_is_refused_and_says_how_to_get_it(tiny_model, omni_dir, tmp_path, capsys):
    recipe = str(write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, omni_dir, tmp_path / "run", use_vllm=True)))
    assert main(["train", recipe]) == 2
    err = capsys.readouterr().err
    assert "grpo.use_vllm: vLLM is not installed" in err and "tools/vllm_cpu_venv.sh" in err
    assert "grpo.use_vllm=false" in err and not (tmp_path / "run" / "model").exists()
    assert main(["validate", recipe]) == 0  # a GPU recipe checked on a laptop: a warning
    assert "med-r1 train would refuse it here" in capsys.readouterr().out


@pytest.mark.skipif(not NO_VLLM or cuda_available(), reason="vLLM is installed here")
def test_without_vllm_eval_on_it_is_refused(tiny_model, omni_dir, tmp_path, capsys):
    raw = tiny_recipe(tiny_model, omni_dir, tmp_path / "run")
    raw["data"]["eval"] = {"path": str(omni_dir)}
    recipe = str(write_recipe(tmp_path / "r.yaml", raw))
    assert main(["eval", recipe, "eval.model=base", "eval.backend=vllm"]) == 2
    err = capsys.readouterr().err
    assert "eval.backend=vllm: vLLM is not installed" in err and "eval.backend=hf" in err
