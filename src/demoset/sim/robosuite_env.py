"""robosuite environments behind demoset's `Env` interface (robosuite 1.5, mujoco 3).

Observation keys and conventions follow robomimic's robosuite wrapper so extracted
datasets look like robomimic's: `object` (the task's object-state vector), every
`robot0_*` observable except the concatenated proprio-state, `<camera>_image` flipped
upright, and `<camera>_depth` converted from MuJoCo's normalised z-buffer to metres.

Importing this module sets `MUJOCO_GL=osmesa` (unless already set) before mujoco loads,
so off-screen rendering works on machines without a display or GPU.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from demoset.errors import SimulationError
from demoset.format import ENV_TYPE_ROBOSUITE, EnvMeta
from demoset.sim.base import Env

os.environ.setdefault("MUJOCO_GL", "osmesa")
if os.environ["MUJOCO_GL"] in ("osmesa", "egl"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

# Keys demoset decides itself when it creates an environment; values stored in a dataset's
# env_kwargs for them are replaced (robomimic does the same when it processes datasets).
_MANAGED_KWARGS = (
    "env_name",
    "has_renderer",
    "has_offscreen_renderer",
    "use_camera_obs",
    "camera_names",
    "camera_heights",
    "camera_widths",
    "camera_depths",
    "camera_height",
    "camera_width",
    "camera_name",
    "camera_depth",
    "render_gpu_device_id",
)


def import_robosuite():
    """Import robosuite quietly (its import logs warnings about a missing macro file)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import robosuite
    except ImportError as exc:
        raise SimulationError(
            f"robosuite is not installed ({exc}); pip install 'demoset[sim]'"
        ) from None
    finally:
        logging.disable(previous)
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    return robosuite


def _jsonable(value: Any) -> Any:
    """env_kwargs as plain JSON types (numpy scalars and arrays become numbers and lists)."""
    return json.loads(
        json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    )


# MjModel fields a MuJoCo rendering context copies when it is made (uploaded meshes,
# textures, height fields, skins, flexes, material-texture bindings); everything else it
# draws comes from the scene, which is rebuilt from the current model for every frame.
_RENDER_FIELD_PREFIXES = ("mesh_", "tex_", "hfield_", "skin_", "flex_", "mat_")


def _render_fields() -> tuple[str, ...]:
    import mujoco

    return tuple(name for name in dir(mujoco.MjModel) if name.startswith(_RENDER_FIELD_PREFIXES))


def _struct_values(struct: Any) -> list[tuple[str, bytes]]:
    """(name, bytes) of every numeric field of a MuJoCo struct such as model.vis.quality."""
    values = []
    for name in dir(struct):
        if name.startswith("_"):
            continue
        value = getattr(struct, name)
        if isinstance(value, (int, float, np.ndarray)):
            values.append((name, np.asarray(value).tobytes()))
    return values


def same_render_resources(a: Any, b: Any) -> bool:
    """Whether a rendering context made for MjModel `a` draws MjModel `b` exactly as its own.

    Compares the fields the context copies at creation: meshes, textures, height fields,
    skins, flexes and materials, every visual setting (`vis`: buffer sizes, quality,
    headlight, map, scale, colours) and the extent (fog and shadow clipping scale with it).
    Conservative: any difference means a new context.
    """
    for name in _render_fields():
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
                return False
        elif x != y:
            return False
    for part in ("global_", "quality", "headlight", "map", "scale", "rgba"):
        if _struct_values(getattr(a.vis, part)) != _struct_values(getattr(b.vis, part)):
            return False
    return bool(a.stat.extent == b.stat.extent)


def _adopt_render_context(context: Any, sim: Any) -> None:
    """Point robosuite's off-screen render context at a newly created simulator."""
    import mujoco

    context.sim = sim
    context.model = sim.model
    context.data = sim.data
    context.scn = mujoco.MjvScene(sim.model._model, maxgeom=context.scn.maxgeom)
    sim.add_render_context(context)


class RobosuiteEnv(Env):
    """A robosuite task created with robosuite.make and driven as robomimic drives it.

    `camera_names` turns on camera observations (each observation then carries those
    frames, with depth when `use_depth`); `render_offscreen` only allows `render()`.
    `fast_reset` skips rebuilding the simulator on `reset()` (robosuite's hard_reset=False),
    which halves the cost of `reset_to` a stored model. `reuse_renderer` keeps the
    off-screen rendering context when `reset_to` loads a model whose meshes, textures and
    visual settings are those of the current one (see `_load_model_xml`).
    `recorded_version` is the robosuite version that recorded the dataset (env_args'
    env_version): a robosuite <= 1.4 recording gets its controller config mapped to
    robosuite 1.5's (sim/legacy_controllers.py) and its stored models pointed at that
    version's asset files (sim/legacy_assets.py).
    Other keyword arguments go to robosuite.make (e.g. robots, controller_configs,
    reward_shaping, horizon), as stored in a dataset's env_kwargs.
    """

    def __init__(
        self,
        env_name: str,
        render_offscreen: bool = False,
        camera_names: tuple[str, ...] | list[str] = (),
        camera_height: int = 84,
        camera_width: int = 84,
        use_depth: bool = False,
        fast_reset: bool = False,
        reuse_renderer: bool = True,
        recorded_version: str | None = None,
        **env_kwargs: Any,
    ):
        from demoset.sim.legacy_controllers import modern_env_kwargs

        robosuite = import_robosuite()
        self._recorded_version = recorded_version
        self._loading_stored_model = False
        self._reuse_renderer = bool(reuse_renderer)
        self._env_name = env_name
        self._camera_names = tuple(camera_names)
        self._use_depth = bool(use_depth)
        kwargs = {k: v for k, v in copy.deepcopy(env_kwargs).items() if k not in _MANAGED_KWARGS}
        has_cameras = bool(self._camera_names)
        kwargs.update(
            has_renderer=False,
            has_offscreen_renderer=bool(render_offscreen or has_cameras),
            ignore_done=True,
            use_object_obs=True,
            use_camera_obs=has_cameras,
            camera_depths=self._use_depth if has_cameras else False,
        )
        if has_cameras:
            kwargs.update(
                camera_names=list(self._camera_names),
                camera_heights=int(camera_height),
                camera_widths=int(camera_width),
            )
        kwargs = modern_env_kwargs(kwargs, recorded_version)
        self._init_kwargs = kwargs
        make_kwargs = copy.deepcopy(kwargs)
        if fast_reset:
            # Keep the simulator between resets: reset_to() rebuilds it from the stored XML
            # anyway. A speed setting, not part of what a dataset was made in, so it stays
            # out of env_meta.
            make_kwargs["hard_reset"] = False
        try:
            self.env = robosuite.make(env_name, **make_kwargs)
        except Exception as exc:  # noqa: BLE001 - robosuite raises many kinds; all mean "cannot create"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SimulationError(
                f"cannot create robosuite environment {env_name!r}: {first}"
            ) from None
        # Stored models (and only they) get the recording version's asset files, after
        # robosuite's own path edit, every time robosuite compiles one.
        self.env._xml_processors.append(self._stored_model_assets)
        from demoset.sim.legacy_controllers import is_legacy_version

        if is_legacy_version(recorded_version):
            from demoset.sim.legacy_obs import restore_legacy_observables

            restore_legacy_observables(self.env, env_name)
        for name in self.env.observation_names:
            if "joint_pos" in name or "eef_vel" in name:
                self.env.modify_observable(observable_name=name, attribute="active", modifier=True)
        self._state_size = self._flat_state_size()

    # ------------------------------------------------------------------ helpers
    def _stored_model_assets(self, xml: str) -> str:
        """robosuite XML processor: a stored model with its version's files, 1.5's names."""
        if not self._loading_stored_model:
            return xml
        from demoset.sim.legacy_model import prepare_stored_model

        return prepare_stored_model(xml, self._recorded_version)

    def _flat_state_size(self) -> int:
        model = self.env.sim.model
        return 1 + int(model.nq) + int(model.nv)

    def _refresh_controllers(self) -> None:
        """Make the controllers re-read the robot state on the next step.

        A controller reads the arm pose once per step and caches it; after a jump to another
        state the cache is stale and the next delta action would be applied from the old
        pose. Marking the controllers as due for an update makes a step after
        `reset_to(states)` behave as it did when that state was reached by stepping. (After a
        model reset the cache is deliberately left as robosuite's DataCollectionWrapper leaves
        it, so open-loop replay of recorded demos follows the recording.)
        """
        for robot in self.env.robots:
            for controller in getattr(robot, "part_controllers", {}).values():
                if hasattr(controller, "new_update"):
                    controller.new_update = True

    def restore_action_history(self, past_actions: np.ndarray) -> None:
        """Rebuild the gripper command ramp from the actions taken before the current state.

        robosuite grippers move their command towards open/closed by a fixed amount per step
        (`current_action`), memory that is not part of the simulator state. Replaying the
        episode's earlier gripper actions restores it, so a step taken after jumping to a
        stored state reproduces the recorded next state.
        """
        past_actions = np.asarray(past_actions, dtype=np.float64)
        if past_actions.ndim == 1:
            past_actions = past_actions[None]
        offset = 0
        for robot in self.env.robots:
            composite = getattr(robot, "composite_controller", None)
            grippers = getattr(composite, "grippers", {}) if composite is not None else {}
            splits = getattr(composite, "_action_split_indexes", {})
            for part, gripper in grippers.items():
                if not hasattr(gripper, "current_action") or part not in splits:
                    continue
                start, end = splits[part]
                gripper.current_action = np.zeros(gripper.dof)
                for action in past_actions:
                    gripper.format_action(action[offset + start : offset + end])
            offset += int(robot.action_dim)

    @contextlib.contextmanager
    def _cameras_paused(self) -> Iterator[None]:
        """Skip camera rendering inside the block (robosuite renders on every reset and step).

        Rendering changes no simulator state, so work whose observation is discarded (the
        resets around loading a model, a step observed afterwards by `reset_to`) can skip
        it. The next `get_observation()` renders afresh: it forces every observable.
        """
        paused = [
            obs
            for obs in self.env._observables.values()
            if obs.modality == "image" and obs.is_enabled()
        ]
        for obs in paused:
            obs.set_enabled(False)
        try:
            yield
        finally:
            for obs in paused:
                obs.set_enabled(True)

    def _load_model_xml(self, xml: str) -> None:
        """Rebuild the simulator from a model XML, as robosuite's reset_from_xml_string does.

        Creating MuJoCo's rendering context uploads every mesh and texture (about 1 s for a
        Panda scene under OSMesa, as long as a dozen camera frames), and robosuite makes one
        per loaded model. Demos of one task usually differ only in physical details (robosuite
        randomises object sizes), so when the new model's render resources (meshes, textures,
        materials, visual settings, extent) equal the old one's, the existing context is
        kept and pointed at the new simulator. The model itself is always compiled afresh,
        so physics is exactly that of a fresh load; rendering is identical because the
        context holds nothing else of the model (tests compare the bytes).
        """
        env = self.env
        if not self._reuse_renderer or env.sim is None:
            env.reset_from_xml_string(xml)
            return
        old_sim = env.sim
        context = old_sim._render_context_offscreen
        old_model = old_sim.model._model
        old_sim._render_context_offscreen = None  # keep it alive through close()
        env.close()
        env.deterministic_reset = True  # as reset_from_xml_string: a reload resets as stored
        try:
            env._initialize_sim(xml_string=xml)
            if context is not None and same_render_resources(old_model, env.sim.model._model):
                _adopt_render_context(context, env.sim)
            context = None  # a context not adopted is freed here; reset() makes a new one
            env.reset()
        finally:
            env.deterministic_reset = False

    def _robot_prefixes(self) -> tuple[str, ...]:
        return tuple(robot.robot_model.naming_prefix for robot in self.env.robots)

    def _convert(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        from robosuite.utils.camera_utils import get_real_depth_map

        out: dict[str, np.ndarray] = {}
        prefixes = self._robot_prefixes()
        for key, value in raw.items():
            if key.endswith("_image"):
                out[key] = np.ascontiguousarray(np.asarray(value)[::-1])
            elif key.endswith("_depth"):
                depth = np.asarray(value)[::-1]
                if depth.ndim == 2:
                    depth = depth[..., None]
                depth = get_real_depth_map(self.env.sim, np.clip(depth, 0.0, 1.0))
                out[key] = np.ascontiguousarray(depth, dtype=np.float32)
        if "object-state" in raw:
            out["object"] = np.array(raw["object-state"])
        for key, value in raw.items():
            if key in out or key.endswith("proprio-state"):
                continue
            if key.startswith(prefixes):
                out[key] = np.array(value)
        return out

    # ------------------------------------------------------------------ Env API
    def reset(self) -> dict[str, np.ndarray]:
        return self._convert(self.env.reset())

    def reset_to(self, state: dict[str, Any]) -> dict[str, np.ndarray] | None:
        if "model" in state and state["model"] is not None:
            ep_meta = state.get("ep_meta")
            if isinstance(ep_meta, (str, bytes)):
                try:
                    ep_meta = json.loads(ep_meta) if ep_meta else {}
                except ValueError:
                    raise SimulationError("ep_meta is not JSON") from None
            if ep_meta and hasattr(self.env, "set_ep_meta"):
                self.env.set_ep_meta(ep_meta)
            with self._cameras_paused():  # the reset's own observation is thrown away
                self.env.reset()
                self._loading_stored_model = True
                try:
                    self._load_model_xml(self.env.edit_model_xml(state["model"]))
                except SimulationError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a bad XML shows up as many exception kinds
                    text = str(exc).strip()
                    first = text.splitlines()[0] if text else type(exc).__name__
                    raise SimulationError(f"cannot load the stored model XML: {first}") from None
                finally:
                    self._loading_stored_model = False
            self.env.sim.reset()
            self._state_size = self._flat_state_size()
        if "states" in state and state["states"] is not None:
            flat = np.asarray(state["states"], dtype=np.float64).reshape(-1)
            if flat.shape[0] != self._state_size:
                raise SimulationError(
                    f"a state has {flat.shape[0]} values but this {self._env_name} model needs "
                    f"{self._state_size} (1 + nq + nv); was it recorded with another model?"
                )
            self.env.sim.set_state_from_flattened(flat)
            self.env.sim.forward()
            if "model" not in state or state["model"] is None:
                self._refresh_controllers()
            return self.get_observation()
        return None

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, dict]:
        raw, reward, _done, info = self.env.step(np.asarray(action, dtype=np.float64))
        return self._convert(raw), float(reward), False, info

    def advance(self, action: np.ndarray) -> None:
        with self._cameras_paused():
            self.env.step(np.asarray(action, dtype=np.float64))

    def get_state(self) -> dict[str, Any]:
        return {
            "states": np.array(self.env.sim.get_state().flatten()),
            "model": self.env.sim.model.get_xml(),
        }

    def get_observation(self) -> dict[str, np.ndarray]:
        return self._convert(self.env._get_observations(force_update=True))

    def render(self, camera_name: str, height: int, width: int, depth: bool = False) -> np.ndarray:
        if getattr(self.env.sim, "_render_context_offscreen", None) is None:
            raise SimulationError("rendering needs an environment made with render_offscreen=True")
        try:
            self.env.sim.model.camera_name2id(camera_name)
        except Exception:  # noqa: BLE001
            names = ", ".join(self.available_cameras())
            raise SimulationError(f"no camera named {camera_name!r} (cameras: {names})") from None
        result = self.env.sim.render(
            width=int(width), height=int(height), camera_name=camera_name, depth=depth
        )
        if not depth:
            return np.ascontiguousarray(result[::-1])
        from robosuite.utils.camera_utils import get_real_depth_map

        zbuf = np.asarray(result[1])[::-1]
        metres = get_real_depth_map(self.env.sim, np.clip(zbuf, 0.0, 1.0))
        return np.ascontiguousarray(metres[..., None], dtype=np.float32)

    def absolute_pose_actions(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The absolute end-effector targets (pos, axis-angle, gripper) that delta actions meant.

        For each step the simulator is put into `states[t]` and the arm's OSC controller is
        given `actions[t]`; the goal it computes (in the controller's reference frame, the
        robot base by default) is the absolute action. Steps run in order so controllers
        that update their goal relative to the previous goal also come out right. Call
        `reset_to({"model": ...})` for the demo first.
        """
        import robosuite.utils.transform_utils as T

        if len(self.env.robots) != 1 or "right" not in self.env.robots[0].part_controllers:
            raise SimulationError("absolute actions are computed for single-arm robots only")
        robot = self.env.robots[0]
        controller = robot.part_controllers["right"]
        if getattr(controller, "input_type", "delta") != "delta" or not hasattr(
            controller, "goal_ori"
        ):
            raise SimulationError("absolute actions need an OSC_POSE controller with delta input")
        states = np.asarray(states)
        actions = np.asarray(actions, dtype=np.float64)
        arm_dim = 6
        out = np.zeros((len(actions), arm_dim + actions.shape[1] - arm_dim), dtype=np.float64)
        for t in range(len(actions)):
            self.env.sim.set_state_from_flattened(states[t])
            self.env.sim.forward()
            robot.composite_controller.update_state()
            controller.update(force=True)  # re-read the arm pose from the state just set
            robot.composite_controller.set_goal(actions[t])
            goal_ori = controller.goal_ori
            out[t, :3] = controller.goal_pos
            out[t, 3:6] = T.quat2axisangle(T.mat2quat(goal_ori))
            out[t, 6:] = actions[t, 6:]
        return out

    def available_cameras(self) -> list[str]:
        model = self.env.sim.model
        return [model.camera_id2name(i) for i in range(int(model.ncam))]

    def is_success(self) -> bool:
        success = self.env._check_success()
        if isinstance(success, dict):
            return bool(success.get("task", False))
        return bool(success)

    def get_reward(self) -> float:
        # Rewards here depend on the state only; some tasks (Stack) still require the argument.
        return float(self.env.reward(None))

    @property
    def env_meta(self) -> EnvMeta:
        import robosuite

        from demoset.sim.legacy_assets import needs_own_assets
        from demoset.sim.legacy_check import RECORDED_VERSION_KEY

        extra = {"env_version": robosuite.__version__}
        if needs_own_assets(self._recorded_version, robosuite.__version__):
            # The stored models still name the recording version's assets (env_version says
            # which robosuite extracted the observations).
            extra[RECORDED_VERSION_KEY] = self._recorded_version
        return EnvMeta(
            env_name=self._env_name,
            env_type=ENV_TYPE_ROBOSUITE,
            env_kwargs=_jsonable(self._init_kwargs),
            extra=extra,
        )

    @property
    def action_dim(self) -> int:
        return int(self.env.action_spec[0].shape[0])

    @property
    def camera_names(self) -> tuple[str, ...]:
        return self._camera_names

    @property
    def use_depth(self) -> bool:
        return self._use_depth

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001 - closing twice or after a failed reset is harmless
            pass
