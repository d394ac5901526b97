#!/usr/bin/env bash
# Prepares, on a machine with pip access, what bench/gpu.sh needs on a GPU machine that reaches no
# registry and takes at most 64 MiB per call: onnxruntime-gpu repacked as an xz tarball (204 MB instead
# of the 256 MB wheel, TensorRT provider left out) split into 51 MB parts under .gpu/, and the pure-Python
# wheels that machine lacks (pydantic and its needs) under .whl/. Both folders are git-ignored locally.
# Then, with the machine warm (calls back to back), one call per part:
#   mkdir -p $HOME/stage && cp .gpu/part-aa $HOME/stage/          (carry .gpu/part-aa; then -ab, -ac)
# and in the last call (carry .gpu/part-ad and .whl):
#   S=$HOME/stage; cp .gpu/part-ad $S/ && cat $S/part-* > $S/ort.tar.xz && mkdir -p $HOME/ortgpu &&
#   tar -xJf $S/ort.tar.xz -C $HOME/ortgpu && python3 -m pip install -q --no-index --no-deps --target /tmp/site
#   .whl/*.whl && export PYTHONPATH=$HOME/ortgpu:/tmp/site && bash bench/gpu.sh
set -euo pipefail
ORT=${ORT_VERSION:-1.31.1}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; printf '/.gpu/\n/.whl/\n' >> .git/info/exclude; }
mkdir -p .gpu .whl
pip_download() {
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "$@"
}
pip_download --no-deps -d .gpu "onnxruntime-gpu==$ORT"
pip_download -d .whl pydantic  # with its needs, at versions that fit each other
work=$(mktemp -d)
(cd "$work" && python3 -m zipfile -e "$OLDPWD"/.gpu/onnxruntime_gpu-"$ORT"-*.whl . \
  && rm -f onnxruntime/capi/libonnxruntime_providers_tensorrt.so \
  && tar -cf - onnxruntime onnxruntime_gpu-"$ORT".dist-info | xz -6 -T0 > ort.tar.xz)
rm -f .gpu/part-*
split -b 51M "$work/ort.tar.xz" .gpu/part-
rm -rf "$work"
ls -l .gpu/part-* .whl
