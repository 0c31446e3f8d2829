#!/usr/bin/env bash
# Builds the "old stack" in its own virtualenv: robosuite 1.4.1 + mujoco 2.3.7 + numpy<2 +
# robomimic 0.3.0 (--no-deps, plus what its dataset_states_to_obs.py imports). It exists only
# to make the reference fixtures under tests/fixtures/oldsuite/; demoset never imports it.
# Safe to run again. Location: $DEMOSET_OLD_STACK (default ~/.cache/demoset/old-stack).
set -euo pipefail
VENV=${DEMOSET_OLD_STACK:-$HOME/.cache/demoset/old-stack}
PY311=${PYTHON311:-python3.11}
[ -x "$VENV/bin/python" ] || "$PY311" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)
"${PIP[@]}" "numpy<2" "mujoco==2.3.7" "robosuite==1.4.1" "h5py<3.12" scipy numba pillow \
    termcolor tqdm psutil imageio imageio-ffmpeg "matplotlib<3.10" tensorboard tensorboardX
# robomimic imports torch from its utils; the CPU wheel only (an open range pulls CUDA).
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" --no-deps "robomimic==0.3.0"
# robomimic 0.3.0 imports mujoco_py (only for an exception type), egl_probe (GPU probing) and
# torchvision (its image encoders, through robomimic.algo): none builds or imports beside
# the CPU torch wheel here, and dataset_states_to_obs.py calls none of them, so stubs stand in.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$SITE/mujoco_py" "$SITE/egl_probe" "$SITE/torchvision/transforms"
printf '"""Stub: robomimic imports it; the extraction script never calls it."""\nfrom . import models, transforms  # noqa: F401\n' >"$SITE/torchvision/__init__.py"
printf '"""Stub."""\n' >"$SITE/torchvision/models.py"
printf '"""Stub."""\nfrom . import functional  # noqa: F401\n\n\ndef Lambda(*a, **k):\n    raise RuntimeError("torchvision is a stub in the old stack")\n\n\nCompose = Lambda\n' >"$SITE/torchvision/transforms/__init__.py"
printf '"""Stub."""\n' >"$SITE/torchvision/transforms/functional.py"
cat >"$SITE/mujoco_py/__init__.py" <<'PY'
"""Stub: robomimic 0.3.0 imports mujoco_py only for its exception type."""
class MujocoException(Exception):
    pass
PY
printf '"""Stub: no EGL probing under OSMesa."""\n\ndef get_available_devices():\n    return []\n' >"$SITE/egl_probe/__init__.py"
"$VENV/bin/python" -c "import robosuite, mujoco, numpy; print('old stack:', robosuite.__version__, mujoco.__version__, numpy.__version__)"
