#!/usr/bin/env bash
# Builds the runtime image (deploy/Dockerfile) without a daemon, with buildah, on a Debian bookworm base
# made with mmdebstrap; runs in it the demo's all-classes job on the CPU (torch absent) and
# `dgn-engine verify --no-torch`; prints the image's uncompressed size and what takes the room.
# Needs root, buildah and mmdebstrap (apt-get install buildah mmdebstrap). Everything it makes lives in
# the work folder; it removes its buildah containers at the end.
#
#   deploy/build-image.sh [--work DIR] [--gpu 0|1] [--ray] [--steps N] [--clean]
#
#   --work DIR  work folder (default /tmp/dgn-engine-image): DIR/cache/ keeps the base's rootfs tarball,
#               DIR/storage and DIR/runroot are buildah's storage (its layer cache between runs)
#   --gpu 0|1   1 (default): onnxruntime-gpu with the CUDA and cuDNN wheels; 0: the CPU-only onnxruntime
#   --ray       also build and check the WITH_RAY=1 variant
#   --steps N   optimisation steps of the demo job (default 30)
#   --clean     remove the images and buildah's storage at the end (keeps DIR/cache)
#
# Lines for machines: "RESULT <tag> ..." after the checks passed, "SIZE <tag> <bytes> bytes (<GB> GB)".
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK=/tmp/dgn-engine-image GPU=1 RAY=0 STEPS=30 CLEAN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --work) WORK="$2"; shift 2 ;;
    --gpu) GPU="$2"; shift 2 ;;
    --ray) RAY=1; shift ;;
    --steps) STEPS="$2"; shift 2 ;;
    --clean) CLEAN=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "build-image.sh: needs root (buildah --isolation chroot, mmdebstrap)" >&2; exit 2; }
for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "build-image.sh: $tool is absent (apt-get install $tool)" >&2; exit 2; }
done
mkdir -p "$WORK/cache" "$WORK/tmp"
WORK="$(cd "$WORK" && pwd)"
export TMPDIR="$WORK/tmp"   # mmdebstrap's and buildah's temporary files stay in the work folder
# overlay where the kernel allows it (fast); vfs otherwise (STORAGE_DRIVER=vfs forces it)
DRIVER="${STORAGE_DRIVER:-overlay}"
B=(buildah --root "$WORK/storage" --runroot "$WORK/runroot" --storage-driver "$DRIVER")
CONTAINERS=()
cleanup() {
  for c in "${CONTAINERS[@]}"; do "${B[@]}" rm "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
t0=$SECONDS
stamp() { echo "== $(date -u +%H:%M:%S) (+$((SECONDS - t0))s) $*"; }

# 1. The base: Debian bookworm minbase (Python 3.11 comes from its apt), cached as a tarball.
BASE_TAR="$WORK/cache/debian-bookworm-minbase.tar"
if [ ! -s "$BASE_TAR" ]; then
  stamp "mmdebstrap: Debian bookworm minbase"
  mmdebstrap --quiet --variant=minbase bookworm "$BASE_TAR.part"
  mv "$BASE_TAR.part" "$BASE_TAR"
fi
if ! "${B[@]}" inspect --type image localhost/dgn-base >/dev/null 2>&1; then
  stamp "base image from $BASE_TAR"
  c=$("${B[@]}" from scratch); CONTAINERS+=("$c")
  "${B[@]}" add "$c" "$BASE_TAR" / >/dev/null
  "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  "${B[@]}" commit --quiet "$c" localhost/dgn-base >/dev/null
fi

# pip inside the build trusts the CA bundle pip trusts here (a network that re-signs TLS needs it)
CA_ARGS=()
CA="${PIP_CERT:-${SSL_CERT_FILE:-}}"
if [ -n "$CA" ] && [ -s "$CA" ]; then
  CA_ARGS=(-v "$CA:/etc/pip-ca.crt:ro" --build-arg PIP_CERT=/etc/pip-ca.crt)
fi

# In the image: torch absent, the demo's all-classes job on the CPU, verify --no-torch of the shipped
# artifacts; with GPU=1 also every library of onnxruntime's CUDA provider resolves (but the driver's).
CHECK=$(cat <<'PY'
import glob, importlib.util, os, subprocess, sys
from dgn_engine.cli.main import main
from dgn_engine import demo
steps, gpu = sys.argv[1], sys.argv[2] == "1"
assert importlib.util.find_spec("torch") is None, "torch is installed in the image"
assert main(["run", "--all-classes", "--steps", steps, "--device", "cpu", "--out", "results", "--quiet"]) == 0
pngs = len(glob.glob("results/**/*.png", recursive=True))
assert os.path.isfile("results/index.html") and pngs >= 10, pngs
assert main(["verify", "--no-torch", "--artifacts", demo.shipped_artifacts("pretrained")]) == 0
assert "torch" not in sys.modules, "torch was imported"
cuda = "absent"
if gpu:
    import onnxruntime
    lib = os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime_providers_cuda.so")
    missing = [l.split()[0] for l in subprocess.run(["ldd", lib], capture_output=True, text=True).stdout.splitlines()
               if "not found" in l]
    assert all(m.startswith("libcuda.so") for m in missing), f"CUDA provider misses {missing}"
    cuda = "resolves"
    print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
print(f"CHECKED pngs={pngs} torch=absent verify=ok cuda_provider={cuda}")
PY
)

variants=(0)
[ "$RAY" = 1 ] && variants+=(1)
for ray in "${variants[@]}"; do
  tag="localhost/dgn-engine:$([ "$GPU" = 1 ] && echo cuda || echo cpu)$([ "$ray" = 1 ] && echo -ray || true)"
  stamp "build $tag (GPU=$GPU WITH_RAY=$ray)"
  "${B[@]}" bud --isolation chroot --layers --quiet -f "$ROOT/deploy/Dockerfile" \
    --build-arg BASE=localhost/dgn-base --build-arg GPU="$GPU" --build-arg WITH_RAY="$ray" \
    "${CA_ARGS[@]}" -t "$tag" "$ROOT" >/dev/null
  stamp "built $tag"

  # the size first, in a fresh container (nothing run in it yet)
  c=$("${B[@]}" from --quiet "$tag"); CONTAINERS+=("$c")
  mnt=$("${B[@]}" mount "$c")
  bytes=$(du -sxb "$mnt" | cut -f1)
  echo "SIZE $tag $bytes bytes ($(awk "BEGIN{printf \"%.2f\", $bytes/1e9}") GB uncompressed)"
  echo "biggest parts (MB):"
  site=$(echo "$mnt"/opt/venv/lib/python3*/site-packages)
  { du -sxm "$mnt/usr" "$mnt/var" "$mnt/opt/venv" | sed "s|$mnt||"
    { du -sxm "$site"/* | grep -v '/nvidia$'; du -sxm "$site"/nvidia/*/lib/* 2>/dev/null; } \
      | sed "s|$site/||" | sort -rn | awk 'NR <= 16' || true
  } | awk '{printf "  %7d  %s\n", $1, $2}'
  "${B[@]}" umount "$c" >/dev/null

  stamp "run in $tag: demo all-classes on the CPU, verify --no-torch"
  out=$("${B[@]}" run --isolation chroot "$c" -- python -c "$CHECK" "$STEPS" "$GPU")
  echo "$out" | sed 's/^/  /'
  if [ "$ray" = 1 ]; then
    "${B[@]}" run --isolation chroot "$c" -- python -c "import ray; print('ray', ray.__version__)" | sed 's/^/  /'
  fi
  checked=$(echo "$out" | grep '^CHECKED ')
  echo "RESULT $tag ${checked#CHECKED }"
  "${B[@]}" rm "$c" >/dev/null
  CONTAINERS=("${CONTAINERS[@]/$c}")
done

if [ "$CLEAN" = 1 ]; then
  stamp "clean: images and buildah storage"
  "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$WORK/storage" "$WORK/runroot" "$WORK/tmp"
fi
stamp "done"
