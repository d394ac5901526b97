"""The runtime image, built and run without a daemon: deploy/build-image.sh makes a Debian bookworm base
with mmdebstrap, builds deploy/Dockerfile on it with buildah, runs the demo's all-classes job on the CPU
in the image (torch absent) and `verify --no-torch`, and prints the image's size.

CI builds the CPU-only variant (GPU=0: onnxruntime); DGN_CONTAINER_GPU=1 builds the CUDA one
(onnxruntime-gpu with the CUDA and cuDNN wheels) and DGN_CONTAINER_RAY=1 adds the WITH_RAY=1 variant.
DGN_CONTAINER_WORK=DIR keeps the base and buildah's layers in DIR between runs (else a temporary folder,
cleaned)."""

import os
import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.container

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "deploy", "build-image.sh")


def _why_not():
    if os.name != "posix" or os.geteuid() != 0:
        return "the container build needs root (buildah --isolation chroot, mmdebstrap)"
    missing = [t for t in ("buildah", "mmdebstrap") if shutil.which(t) is None]
    if missing:
        return f"{' and '.join(missing)} absent (apt-get install buildah mmdebstrap)"
    return None


@pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")
def test_image_builds_and_runs_the_demo_without_torch(tmp_path):
    gpu = os.environ.get("DGN_CONTAINER_GPU", "0")
    ray = os.environ.get("DGN_CONTAINER_RAY") == "1"
    work = os.environ.get("DGN_CONTAINER_WORK")
    args = [SCRIPT, "--gpu", gpu, "--steps", "20"]
    args += ["--work", work] if work else ["--work", str(tmp_path / "work"), "--clean"]
    if ray:
        args.append("--ray")
    result = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    out = result.stdout
    print(out)  # the sizes and their parts, in pytest's report with -s or on failure
    assert result.returncode == 0, (out[-3000:], result.stderr[-5000:])

    flavour = "cuda" if gpu == "1" else "cpu"
    tags = [f"localhost/dgn-engine:{flavour}"] + ([f"localhost/dgn-engine:{flavour}-ray"] if ray else [])
    for tag in tags:
        result_line = rf"^RESULT {re.escape(tag)} pngs=(\d+) torch=absent verify=ok cuda_provider=(\w+)$"
        checked = re.search(result_line, out, re.M)
        assert checked, (tag, out[-3000:])
        assert int(checked.group(1)) >= 10  # one picture per class of the demo, at least
        assert checked.group(2) == ("resolves" if gpu == "1" else "absent")
        size = re.search(rf"^SIZE {re.escape(tag)} (\d+) bytes \((\d+\.\d+) GB uncompressed\)$", out, re.M)
        assert size, (tag, out[-3000:])
        # regression bounds, measured + ~10% (deploy/README.md): CPU 0.44 GB; CUDA ~2.85 GB, over the 2.5 GB
        # goal (the CUDA and cuDNN wheels alone are 2.07 GB); Ray adds ~0.35 GB
        limit = (3.1e9 if gpu == "1" else 0.5e9) + (0.4e9 if tag.endswith("-ray") else 0)
        assert int(size.group(1)) < limit, (tag, size.group(0))
    assert "biggest parts (MB):" in out and "/opt/venv" in out
    if ray:
        assert re.search(r"^  ray 2\.", out, re.M)
