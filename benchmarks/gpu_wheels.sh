#!/usr/bin/env bash
# Fetch, on this machine, the wheels of clearct's dependencies that the lent GPU machine's image lacks (it has torch,
# timm, h5py, scikit-learn, matplotlib, safetensors, PyYAML, tqdm, …; it cannot reach a package index). They go to
# .whl/ (git-ignored), at the versions installed in .venv, for CPython 3.12 on x86-64; benchmarks/gpu_check.sh
# installs them there. Run from the repository root after `make setup`.
set -euo pipefail
names="pydicom pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg nibabel monai pydantic pydantic-core annotated-types
typing-inspection"
mkdir -p .whl
for name in $names; do
  version=$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_39_x86_64 --platform manylinux_2_35_x86_64 --platform manylinux_2_34_x86_64 \
    --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$name==$version"
done
du -sh .whl
