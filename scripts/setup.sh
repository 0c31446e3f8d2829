#!/usr/bin/env bash
# Creates .venv and installs demoset with everything its tests and demo need.
# Safe to run again; `make` calls it when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -e /usr/lib/x86_64-linux-gnu/libOSMesa.so.8 ] || ldconfig -p | grep -q libOSMesa || need_apt+=(libosmesa6)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = "0" ]; then
        echo "setup: installing system packages: ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "setup: please install with apt: ${need_apt[*]} (off-screen rendering, report screenshots)" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch first: an open range would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[all,dev]"
# robomimic is the reference the tests compare against; its own pins would replace torch.
.venv/bin/python -m pip install -q --no-deps "robomimic==0.3.0"
# robosuite 1.4.1's asset files for the old-robosuite tests (tests/fixtures/oldsuite): fetched
# once into the user cache here, so the tests themselves never download anything.
.venv/bin/python -c "from demoset.sim.legacy_assets import fetch_assets; fetch_assets('1.4.1')" \
    || echo "setup: could not cache robosuite 1.4.1's assets (the old-robosuite tests will try again)" >&2
# lerobot 0.4.4 in its own venv (it pins an older torch), for the LeRobot converter tests
bash scripts/lerobot_env.sh || echo "setup: the lerobot venv was not built; tests/convert/test_lerobot_real.py will try again" >&2
echo "setup: done (.venv)"
