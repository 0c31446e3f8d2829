"""Scripted demonstrators for robosuite pick-and-place tasks (Lift, Stack, PickPlaceCan).

Each demonstrator is a small state machine over waypoints (approach, descend, grasp,
lift, and for the placing tasks carry, lower, release, retreat) that drives robosuite's
default OSC_POSE controller with delta actions: three position deltas in [-1, 1] (1 =
5 cm per step), three rotation deltas (used to turn the gripper to the object's yaw) and
one gripper command (-1 open, +1 closed).

Noise makes demos differ the way human demos do: every episode draws its own grasp offset,
heights and speed, and every step adds Gaussian noise to the motion part of the action.
The demonstrators read object positions straight from the simulator (privileged
information), which is fine for producing demonstrations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from demoset.errors import SimulationError

OPEN = -1.0
CLOSED = 1.0
POS_SCALE = 0.05  # metres per unit of position action (OSC_POSE output_max)
ROT_SCALE = 0.5  # radians per unit of rotation action


def _quat_to_yaw(quat_xyzw: np.ndarray) -> float:
    """Yaw (rotation about world z) of an (x, y, z, w) quaternion."""
    x, y, z, w = (float(v) for v in quat_xyzw)
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def _wrap_quarter_turn(angle: float) -> float:
    """An angle folded into [-pi/4, pi/4): a square grasp is the same every 90 degrees."""
    return float((angle + np.pi / 4) % (np.pi / 2) - np.pi / 4)


def _wrap_half_turn(angle: float) -> float:
    return float((angle + np.pi / 2) % np.pi - np.pi / 2)


@dataclass
class Waypoint:
    """Move the gripper to `target` (world frame) with the gripper at `grip`.

    The waypoint is reached when the position error is below `tol` (metres) and at least
    `min_steps` steps were spent on it; `max_steps` bounds it so a stuck demo ends.
    """

    name: str
    target: np.ndarray | None  # None: hold position
    grip: float
    tol: float = 0.01
    min_steps: int = 0
    max_steps: int = 60
    align_yaw: bool = False


@dataclass
class Episode:
    """Per-episode random draws that make one demo differ from another."""

    grasp_offset: np.ndarray
    hover: float
    lift: float
    gain: float
    place_offset: np.ndarray = field(default_factory=lambda: np.zeros(2))


class ScriptedPolicy:
    """Base class: subclasses build the waypoint list from the simulator at episode start."""

    env_names: tuple[str, ...] = ()

    def __init__(self, env, rng: np.random.Generator, noise: float = 0.05):
        self.env = env
        self.rng = rng
        self.noise = float(noise)
        self.waypoints: list[Waypoint] = []
        self.index = 0
        self.steps_on_waypoint = 0
        self.episode: Episode | None = None
        self.target_yaw = 0.0

    # -------------------------------------------------------------- simulator reads
    def eef_pos(self) -> np.ndarray:
        robot = self.env.robots[0]
        return np.array(self.env.sim.data.site_xpos[robot.eef_site_id["right"]])

    def eef_yaw(self) -> float:
        robot = self.env.robots[0]
        mat = np.array(self.env.sim.data.site_xmat[robot.eef_site_id["right"]]).reshape(3, 3)
        # the gripper's x axis projected on the table plane gives its yaw
        return float(np.arctan2(mat[1, 0], mat[0, 0]))

    def body_pos(self, body_id: int) -> np.ndarray:
        return np.array(self.env.sim.data.body_xpos[body_id])

    def body_yaw(self, body_id: int) -> float:
        w, x, y, z = (float(v) for v in self.env.sim.data.body_xquat[body_id])
        return _quat_to_yaw(np.array([x, y, z, w]))

    # -------------------------------------------------------------- episode
    def draw_episode(self) -> Episode:
        r = self.rng
        return Episode(
            grasp_offset=r.uniform(-0.004, 0.004, size=3) * np.array([1.0, 1.0, 0.5]),
            hover=float(r.uniform(0.06, 0.11)),
            lift=float(r.uniform(0.12, 0.2)),
            gain=float(r.uniform(0.7, 1.2)),
            place_offset=r.uniform(-0.01, 0.01, size=2),
        )

    def reset(self) -> None:
        """Plan a new episode from the current simulator state."""
        self.episode = self.draw_episode()
        self.waypoints = self.plan(self.episode)
        self.index = 0
        self.steps_on_waypoint = 0

    def plan(self, ep: Episode) -> list[Waypoint]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.index >= len(self.waypoints)

    # -------------------------------------------------------------- acting
    def action(self) -> np.ndarray:
        """The next 7-D action (position delta, rotation delta, gripper)."""
        if self.episode is None:
            raise SimulationError("ScriptedPolicy.reset() must be called before action()")
        if self.done:
            return np.array([0, 0, 0, 0, 0, 0, self.waypoints[-1].grip if self.waypoints else OPEN])
        wp = self.waypoints[self.index]
        eef = self.eef_pos()
        target = eef if wp.target is None else wp.target
        error = target - eef
        move = np.clip(self.episode.gain * error / POS_SCALE, -1.0, 1.0)
        rot = np.zeros(3)
        if wp.align_yaw:
            yaw_err = _wrap_quarter_turn(self.target_yaw - self.eef_yaw())
            rot[2] = np.clip(yaw_err / ROT_SCALE, -1.0, 1.0)
        if self.noise > 0:
            move = move + self.rng.normal(0.0, self.noise, size=3)
            rot = rot + self.rng.normal(0.0, self.noise * 0.2, size=3)
        self.steps_on_waypoint += 1
        reached = wp.target is None or np.linalg.norm(error) < wp.tol
        if (
            reached and self.steps_on_waypoint >= wp.min_steps
        ) or self.steps_on_waypoint >= wp.max_steps:
            self.index += 1
            self.steps_on_waypoint = 0
        return np.concatenate([np.clip(move, -1, 1), np.clip(rot, -1, 1), [wp.grip]])

    # -------------------------------------------------------------- building blocks
    def pick(self, obj_pos: np.ndarray, ep: Episode, grasp_dz: float = 0.0) -> list[Waypoint]:
        """Waypoints that pick an object at `obj_pos` and lift it to `ep.lift` above."""
        grasp = obj_pos + ep.grasp_offset + np.array([0.0, 0.0, grasp_dz])
        above = grasp + np.array([0.0, 0.0, ep.hover])
        return [
            Waypoint("approach", above, OPEN, tol=0.012, max_steps=80, align_yaw=True),
            Waypoint("descend", grasp, OPEN, tol=0.006, max_steps=50, align_yaw=True),
            Waypoint("grasp", None, CLOSED, min_steps=8, max_steps=8),
            Waypoint(
                "lift", grasp + np.array([0.0, 0.0, ep.lift]), CLOSED, tol=0.015, max_steps=60
            ),
        ]


class LiftPolicy(ScriptedPolicy):
    """Pick the cube and lift it; Lift succeeds once the cube is 4 cm above the table."""

    env_names = ("Lift",)

    def plan(self, ep: Episode) -> list[Waypoint]:
        cube = self.env.cube_body_id
        self.target_yaw = _wrap_quarter_turn(self.body_yaw(cube))
        return self.pick(self.body_pos(cube), ep)


class StackPolicy(ScriptedPolicy):
    """Pick cube A and put it on cube B, then let go and move up."""

    env_names = ("Stack",)

    def plan(self, ep: Episode) -> list[Waypoint]:
        env = self.env
        a = self.body_pos(env.cubeA_body_id)
        b = self.body_pos(env.cubeB_body_id)
        self.target_yaw = _wrap_quarter_turn(self.body_yaw(env.cubeA_body_id))
        a_half = float(env.cubeA.size[2])
        b_half = float(env.cubeB.size[2])
        waypoints = self.pick(a, ep)
        grasp_height_above_a = ep.grasp_offset[2]
        place = b + np.array([ep.place_offset[0] * 0.5, ep.place_offset[1] * 0.5, 0.0])
        place[2] = b[2] + b_half + a_half + grasp_height_above_a + 0.008
        carry = place + np.array([0.0, 0.0, max(ep.lift - 0.04, 0.07)])
        waypoints += [
            Waypoint("carry", carry, CLOSED, tol=0.01, max_steps=80),
            Waypoint("lower", place, CLOSED, tol=0.006, max_steps=50),
            Waypoint("release", None, OPEN, min_steps=8, max_steps=8),
            Waypoint("retreat", place + np.array([0.0, 0.0, 0.08]), OPEN, tol=0.015, max_steps=40),
        ]
        return waypoints


class PickPlaceCanPolicy(ScriptedPolicy):
    """Pick the can and drop it into its bin, then move the gripper away."""

    env_names = ("PickPlaceCan",)

    def plan(self, ep: Episode) -> list[Waypoint]:
        env = self.env
        can_id = env.obj_body_id["Can"]
        can = self.body_pos(can_id)
        self.target_yaw = 0.0
        waypoints = self.pick(can, ep, grasp_dz=0.01)
        target = np.array(env.target_bin_placements[env.object_to_id["can"]])
        drop = np.array([target[0] + ep.place_offset[0], target[1] + ep.place_offset[1], 0.0])
        drop[2] = env.bin2_pos[2] + 0.12
        waypoints += [
            Waypoint(
                "carry_up",
                np.array([can[0], can[1], drop[2] + 0.05]),
                CLOSED,
                tol=0.02,
                max_steps=60,
            ),
            Waypoint("carry", drop + np.array([0.0, 0.0, 0.05]), CLOSED, tol=0.015, max_steps=100),
            Waypoint("lower", drop, CLOSED, tol=0.01, max_steps=40),
            Waypoint("release", None, OPEN, min_steps=10, max_steps=10),
            Waypoint("retreat", drop + np.array([0.0, 0.0, 0.12]), OPEN, tol=0.02, max_steps=40),
        ]
        return waypoints


POLICIES: dict[str, type[ScriptedPolicy]] = {
    name: cls for cls in (LiftPolicy, StackPolicy, PickPlaceCanPolicy) for name in cls.env_names
}


def scripted_policy_for(
    env_name: str, env, rng: np.random.Generator, noise: float = 0.05
) -> ScriptedPolicy:
    """The scripted demonstrator for a robosuite task (raises SimulationError if none)."""
    if env_name not in POLICIES:
        raise SimulationError(
            f"no scripted demonstrator for {env_name!r} (available: {', '.join(sorted(POLICIES))})"
        )
    return POLICIES[env_name](env, rng, noise)
