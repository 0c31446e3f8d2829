"""Simulators: environments behind one interface, scripted collection, obs extraction, playback.

Only `make_env` and the interface are imported here; robosuite and mujoco load when an
environment is created, so importing demoset stays fast.
"""

from demoset.sim.base import Env
from demoset.sim.factory import as_env_meta, cameras_from_obs_keys, make_env

__all__ = ["Env", "as_env_meta", "cameras_from_obs_keys", "make_env"]
