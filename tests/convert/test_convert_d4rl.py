"""`demoset convert d4rl` on D4RL-layout files built from real gymnasium rollouts.

The rollouts come from gymnasium's MuJoCo InvertedPendulum-v5 with random actions and a
short time limit, so the stream has episodes ending at terminals and at timeouts, plus an
unterminated episode at the end, and infos/qpos, infos/qvel as D4RL's MuJoCo files have.
Every output is checked by `validate` and loaded by robomimic 0.3.0's SequenceDataset.
"""

from __future__ import annotations

import hashlib
import os

import h5py
import numpy as np
import pytest

from demoset.cli.main import main
from demoset.convert.d4rl import convert_d4rl, episode_bounds
from demoset.errors import ConversionError
from demoset.format import open_dataset, validate

ENV_ID = "InvertedPendulum-v5"


def rollout(steps: int = 700, seed: int = 0) -> dict[str, np.ndarray]:
    """A D4RL-style transition stream from a real environment, cut mid-episode at the end."""
    import gymnasium as gym

    env = gym.make(ENV_ID, max_episode_steps=12)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows: dict[str, list] = {
        k: []
        for k in (
            "observations",
            "actions",
            "rewards",
            "terminals",
            "timeouts",
            "next_observations",
            "qpos",
            "qvel",
        )
    }
    for _ in range(steps):
        data = env.unwrapped.data
        qpos, qvel = data.qpos.copy(), data.qvel.copy()
        action = 0.2 * env.action_space.sample()
        nxt, reward, terminated, truncated, _ = env.step(action)
        rows["observations"].append(obs)
        rows["actions"].append(action)
        rows["rewards"].append(reward)
        rows["terminals"].append(terminated)
        rows["timeouts"].append(truncated and not terminated)
        rows["next_observations"].append(nxt)
        rows["qpos"].append(qpos)
        rows["qvel"].append(qvel)
        obs = nxt
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    out = {k: np.asarray(v) for k, v in rows.items()}
    # end the stream in the middle of an episode, as D4RL files often do
    last_end = int(np.flatnonzero(out["terminals"] | out["timeouts"])[-1])
    cut = last_end + 1 + 5
    return {k: v[:cut] for k, v in out.items()}


def write_d4rl(path, stream, next_observations=True, env_name: str | None = ENV_ID) -> str:
    """Write `stream` in D4RL's HDF5 layout (float32 arrays, bool flags, infos/, metadata/)."""
    with h5py.File(path, "w") as f:
        f["observations"] = stream["observations"].astype(np.float32)
        f["actions"] = stream["actions"].astype(np.float32)
        f["rewards"] = stream["rewards"].astype(np.float32)
        f["terminals"] = stream["terminals"].astype(bool)
        f["timeouts"] = stream["timeouts"].astype(bool)
        if next_observations:
            f["next_observations"] = stream["next_observations"].astype(np.float32)
        f["infos/qpos"] = stream["qpos"]
        f["infos/qvel"] = stream["qvel"]
        f["infos/action_log_probs"] = np.zeros(3)  # wrong length: must be skipped, not used
        f["metadata/algorithm"] = np.bytes_("random")
        f["metadata/policy/fc0/weight"] = np.ones((64, 4), dtype=np.float32)
        if env_name:
            f["metadata/env_name"] = np.bytes_(env_name)
    return str(path)


@pytest.fixture(scope="module")
def stream():
    return rollout()


def fingerprint(path) -> tuple[str, int]:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns


def reference_episodes(stream, keep_trailing=True) -> list[tuple[int, int]]:
    """Episode boundaries by a plain loop over transitions (the obvious way)."""
    episodes, start = [], 0
    for t in range(len(stream["terminals"])):
        if stream["terminals"][t] or stream["timeouts"][t]:
            episodes.append((start, t + 1))
            start = t + 1
    if keep_trailing and start < len(stream["terminals"]):
        episodes.append((start, len(stream["terminals"])))
    return episodes


def load_with_robomimic(path, obs_keys, filter_key=None):
    """robomimic 0.3.0's SequenceDataset over `path`; returns (dataset, first item)."""
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": list(obs_keys)}})
    ds = SequenceDataset(
        hdf5_path=str(path),
        obs_keys=tuple(obs_keys),
        dataset_keys=("actions", "rewards", "dones"),
        seq_length=4,
        hdf5_cache_mode="low_dim",
        filter_by_attribute=filter_key,
    )
    return ds, ds[0]


def test_converts_with_next_observations(tmp_path, stream):
    src = write_d4rl(tmp_path / "pendulum-random-v0.hdf5", stream)
    before = fingerprint(src)
    out = tmp_path / "out.hdf5"
    result = convert_d4rl(src, out, infos_as_obs=True)
    assert fingerprint(src) == before

    episodes = reference_episodes(stream)
    assert np.any(stream["terminals"]) and np.any(stream["timeouts"])
    assert result.demos == len(episodes) and result.transitions == len(stream["terminals"])
    assert result.trailing_steps == 5 and result.trailing_kept
    assert result.env_name == ENV_ID and result.env_name_source == "metadata"
    assert result.next_obs_source == "next_observations"
    assert result.obs_keys == ["flat", "qpos", "qvel"] and result.skipped_infos == [
        "action_log_probs"
    ]
    assert [f for f in validate(out) if f.level == "error"] == []

    with open_dataset(out) as df:
        meta = df.env_meta
        assert (meta.env_name, meta.env_type, meta.env_kwargs) == (ENV_ID, 2, {})
        assert df.total == len(stream["terminals"])
        assert list(df.lengths()) == [b - a for a, b in episodes]
        for demo, (a, b) in zip(df.demos, episodes):
            np.testing.assert_array_equal(
                df.read(demo, "obs/flat"), stream["observations"][a:b].astype(np.float32)
            )
            np.testing.assert_array_equal(
                df.read(demo, "next_obs/flat"), stream["next_observations"][a:b].astype(np.float32)
            )
            np.testing.assert_array_equal(df.read(demo, "obs/qpos"), stream["qpos"][a:b])
            np.testing.assert_array_equal(
                df.read(demo, "actions"), stream["actions"][a:b].astype(np.float32)
            )
            np.testing.assert_array_equal(
                df.read(demo, "rewards"), stream["rewards"][a:b].astype(np.float32)
            )
            np.testing.assert_array_equal(
                df.read(demo, "dones"), stream["terminals"][a:b].astype(np.int64)
            )
        # the trailing episode is the last demo and has no done
        assert df.read(df.demos[-1], "dones").sum() == 0

    ds, item = load_with_robomimic(out, ["flat", "qpos", "qvel"])
    assert len(ds) == len(stream["terminals"])
    np.testing.assert_allclose(item["obs"]["flat"][0], stream["observations"][0])
    np.testing.assert_allclose(item["actions"][0], stream["actions"][0], rtol=1e-6)


def test_blocks_do_not_change_the_result(tmp_path, stream):
    src = write_d4rl(tmp_path / "d.hdf5", stream, next_observations=False)
    big = convert_d4rl(src, tmp_path / "big.hdf5")
    small = convert_d4rl(src, tmp_path / "small.hdf5", block_bytes=1)  # one episode per block
    assert big.demos == small.demos
    with open_dataset(tmp_path / "big.hdf5") as a, open_dataset(tmp_path / "small.hdf5") as b:
        for demo in a.demos:
            for key in ("obs/flat", "next_obs/flat", "actions", "rewards", "dones"):
                np.testing.assert_array_equal(a.read(demo, key), b.read(demo, key))


def test_derived_next_obs_and_options(tmp_path, stream):
    src = write_d4rl(
        tmp_path / "walker-like-v2.hdf5", stream, next_observations=False, env_name=None
    )
    out = tmp_path / "out.hdf5"
    result = convert_d4rl(
        src, out, infos_as_obs=["qpos"], dones_at_timeouts=True, keep_trailing=False
    )
    episodes = reference_episodes(stream, keep_trailing=False)
    assert result.demos == len(episodes) and not result.trailing_kept and result.trailing_steps == 5
    assert result.env_name == "walker-like-v2" and result.env_name_source == "file name"
    assert result.next_obs_source == "derived"
    assert [f for f in validate(out) if f.level == "error"] == []
    obs = stream["observations"].astype(np.float32)
    with open_dataset(out) as df:
        assert df.total == episodes[-1][1]
        assert sorted(df.obs_keys()) == ["flat", "qpos"]
        for demo, (a, b) in zip(df.demos, episodes):
            nxt = df.read(demo, "next_obs/flat")
            # inside an episode the next observation is the following row ...
            np.testing.assert_array_equal(nxt[:-1], obs[a + 1 : b])
            # ... and the last step repeats its own observation (robomimic's rule)
            np.testing.assert_array_equal(nxt[-1], obs[b - 1])
            np.testing.assert_array_equal(
                df.read(demo, "next_obs/qpos")[:-1], stream["qpos"][a + 1 : b]
            )
            dones = df.read(demo, "dones")
            assert dones[-1] == 1 and dones[:-1].sum() == stream["terminals"][a : b - 1].sum()
    load_with_robomimic(out, ["flat", "qpos"])

    # the environment id given on the command line wins
    r2 = convert_d4rl(src, tmp_path / "named.hdf5", env_name="Hopper-v4")
    assert r2.env_name == "Hopper-v4" and r2.env_name_source == "argument"


def test_episode_bounds_edge_cases():
    starts, stops, trailing = episode_bounds(np.array([0, 0, 1, 0, 1]), np.array([0, 0, 0, 0, 0]))
    assert starts.tolist() == [0, 3] and stops.tolist() == [3, 5] and trailing == 0
    starts, stops, trailing = episode_bounds(np.zeros(4), None)
    assert starts.tolist() == [0] and stops.tolist() == [4] and trailing == 4
    starts, stops, trailing = episode_bounds(np.zeros(4), None, keep_trailing=False)
    assert starts.size == 0 and trailing == 4


def test_cli_and_bad_input(tmp_path, stream, capsys):
    src = write_d4rl(tmp_path / "d.hdf5", stream)
    out = tmp_path / "cli.hdf5"
    assert (
        main(
            [
                "convert",
                "d4rl",
                src,
                "--out",
                str(out),
                "--env-name",
                "InvertedPendulum-v5",
                "--info-keys",
                "qpos",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "unterminated episode of 5 steps: kept" in printed and "qpos" in printed
    with open_dataset(out) as df:
        assert sorted(df.obs_keys()) == ["flat", "qpos"]

    # an existing output is refused and left alone
    before = fingerprint(out)
    assert main(["convert", "d4rl", src, "--out", str(out)]) == 2
    assert fingerprint(out) == before
    capsys.readouterr()

    # not a D4RL file: one line naming the file and the missing array, nothing written
    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as f:
        f["observations"] = np.zeros((4, 2))
        f["actions"] = np.zeros((4, 1))
        f["rewards"] = np.zeros(4)
    assert main(["convert", "d4rl", str(bad), "--out", str(tmp_path / "never.hdf5")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "/terminals" in err
    assert not (tmp_path / "never.hdf5").exists()
    assert [p for p in os.listdir(tmp_path) if p.endswith(".partial")] == []

    with pytest.raises(ConversionError, match="overwrite the source"):
        convert_d4rl(src, src, overwrite=True)
    with pytest.raises(ConversionError, match="infos/nope"):
        convert_d4rl(src, tmp_path / "x.hdf5", infos_as_obs=["nope"])
