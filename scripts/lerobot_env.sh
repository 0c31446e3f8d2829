#!/usr/bin/env bash
# Builds lerobot 0.4.4 in its own virtualenv, for the tests that check demoset's LeRobot
# import/export against LeRobot's real dataset code.
#
# lerobot 0.4.x pins torch<2.11, whose only wheels here are multi-GB CUDA builds, so it
# cannot share .venv. It runs beside the CPU torch 2.13.0 wheel when installed --no-deps
# with the short list of packages its dataset code imports (below). torchvision does not
# import beside that torch, so a stub package stands in for it: LeRobot's dataset code only
# touches it for image transforms and its own video decoding, which the tests replace by
# decoding the mp4 files with PyAV.
#
# Usage: scripts/lerobot_env.sh [VENV]   (default $DEMOSET_LEROBOT_VENV or
#        ~/.cache/demoset/lerobot-venv). Safe to run again: a finished venv is kept.
set -euo pipefail
VENV=${1:-${DEMOSET_LEROBOT_VENV:-$HOME/.cache/demoset/lerobot-venv}}
STAMP="$VENV/.demoset-lerobot-ready"
mkdir -p "$(dirname "$VENV")"
# one build at a time (parallel test workers may all ask for it)
exec 9>"$VENV.lock"
flock 9
VERSION_TAG="lerobot==0.4.4 torch==2.13.0 stub-torchvision-1 numpy<2.3"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION_TAG" ]; then
    echo "lerobot_env: ready ($VENV)"
    exit 0
fi
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-warn-conflicts)
# the CPU torch wheel first: lerobot's own pin would pull a CUDA build
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" --no-deps "lerobot==0.4.4" "accelerate>=1.10,<2"
# the versions lerobot 0.4.4 declares, and numpy/pandas of its time (numpy 2.4 refuses the
# float() of a one-element array that its writer does for (1,)-shaped features)
"${PIP[@]}" "numpy>=2,<2.3" "pandas>=2,<3" "pyarrow>=14,<22" "datasets>=4,<5" \
    "huggingface-hub>=0.34.2,<0.36" "av>=15,<16" "jsonlines>=4,<5" "draccus==0.10.0" \
    "einops>=0.8,<0.9" "deepdiff>=7,<9" "packaging>=24.2,<26" "termcolor>=2.4,<4" \
    psutil pyyaml safetensors pillow
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p "$SITE/torchvision/transforms" "$SITE/torchvision/io"
cat > "$SITE/torchvision/__init__.py" <<'PY'
"""Stub torchvision for lerobot's dataset code (the real one does not import beside this torch).

Any attribute is a placeholder that fails when called, so code paths that really need
torchvision fail loudly instead of silently doing nothing.
"""

__version__ = "0.0.0+demoset.stub"


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is a stub in demoset's lerobot venv")

    def __init_subclass__(cls, **kwargs):
        pass


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Unavailable
PY
for sub in transforms io; do
    cp "$SITE/torchvision/__init__.py" "$SITE/torchvision/$sub/__init__.py"
done
mkdir -p "$SITE/torchvision/transforms/v2"
cp "$SITE/torchvision/__init__.py" "$SITE/torchvision/transforms/v2/__init__.py"
cp "$SITE/torchvision/__init__.py" "$SITE/torchvision/transforms/v2/functional.py"
cp "$SITE/torchvision/__init__.py" "$SITE/torchvision/transforms/functional.py"
"$VENV/bin/python" -c "from lerobot.datasets.lerobot_dataset import LeRobotDataset" \
    || { echo "lerobot_env: lerobot does not import in $VENV" >&2; exit 1; }
echo "$VERSION_TAG" > "$STAMP"
echo "lerobot_env: done ($VENV)"
