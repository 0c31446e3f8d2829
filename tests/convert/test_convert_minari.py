"""Minari in and out: datasets made by minari's own DataCollector from gymnasium
environments are converted into the robomimic layout, and robomimic files exported to
Minari are loaded by `minari.load_dataset` and converted back with every value intact.

MINARI_DATASETS_PATH points into the test's tmp_path, so nothing touches ~/.minari.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np
import pytest

from demoset.cli.main import main
from demoset.convert.minari import convert_minari, export_minari
from demoset.errors import ConversionError, WriteError
from demoset.format import DatasetWriter, open_dataset, validate

from tests.helpers import LIFT_ENV, write_dataset


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def collect(dataset_id: str, dict_obs: bool, episodes: int = 4, steps: int = 25):
    """Random Pendulum-v1 episodes recorded by minari's DataCollector (with infos)."""
    import gymnasium as gym
    from gymnasium import spaces
    from minari import DataCollector

    class DictObs(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = spaces.Dict(
                {
                    "angle": spaces.Box(-1.0, 1.0, (2,), np.float32),
                    "velocity": spaces.Box(-8.0, 8.0, (1,), np.float32),
                }
            )

        def observation(self, obs):
            return {"angle": obs[:2], "velocity": obs[2:]}

    class EffortInfo(gym.Wrapper):
        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            return obs, {**info, "effort": np.float64(0.0)}

        def step(self, action):
            obs, reward, term, trunc, info = self.env.step(action)
            return obs, reward, term, trunc, {**info, "effort": np.float64(np.square(action).sum())}

    env = gym.make("Pendulum-v1", max_episode_steps=steps)
    if dict_obs:
        env = DictObs(env)
    env = DataCollector(EffortInfo(env), record_infos=True)
    env.action_space.seed(0)
    for ep in range(episodes):
        env.reset(seed=ep)
        while True:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = env.create_dataset(
            dataset_id=dataset_id,
            algorithm_name="random",
            author="demoset tests",
            author_email="tests@example.org",
            code_permalink="https://example.org",
            description="random Pendulum-v1",
        )
    env.close()
    return dataset


def fingerprints(folder) -> dict:
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[path] = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def robomimic_dataset(path, low_dim, rgb=(), filter_key=None):
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    ObsUtils.initialize_obs_utils_with_obs_specs(
        {"obs": {"low_dim": list(low_dim), "rgb": list(rgb)}}
    )
    return SequenceDataset(
        hdf5_path=str(path),
        obs_keys=tuple(low_dim) + tuple(rgb),
        dataset_keys=("actions", "rewards", "dones"),
        seq_length=3,
        hdf5_cache_mode="low_dim",
        filter_by_attribute=filter_key,
    )


def test_import_box_dataset_from_data_collector(tmp_path, minari_root):
    dataset = collect("pendulum/random-v0", dict_obs=False)
    before = fingerprints(minari_root)
    out = tmp_path / "pendulum.hdf5"
    result = convert_minari("pendulum/random-v0", out, infos_as_obs=True)
    assert fingerprints(minari_root) == before
    assert result.demos == 4 and result.transitions == dataset.total_steps == 100
    assert result.env_name == "Pendulum-v1" and result.obs_keys == ["effort", "flat"]
    assert [f for f in validate(out) if f.level == "error"] == []
    with open_dataset(out) as df:
        meta = df.env_meta
        assert (meta.env_name, meta.env_type) == ("Pendulum-v1", 2)
        for demo, episode in zip(df.demos, dataset.iterate_episodes()):
            np.testing.assert_array_equal(df.read(demo, "obs/flat"), episode.observations[:-1])
            np.testing.assert_array_equal(df.read(demo, "next_obs/flat"), episode.observations[1:])
            np.testing.assert_array_equal(df.read(demo, "actions"), episode.actions)
            np.testing.assert_array_equal(df.read(demo, "rewards"), episode.rewards)
            np.testing.assert_array_equal(
                df.read(demo, "dones"), episode.terminations.astype(np.int64)
            )
            np.testing.assert_array_equal(df.read(demo, "obs/effort"), episode.infos["effort"][:-1])
    ds = robomimic_dataset(out, ["flat", "effort"])
    assert len(ds) == 100 and ds[0]["obs"]["flat"].shape == (3, 3)


def test_import_dict_dataset_by_folder_and_cli(tmp_path, minari_root, capsys):
    dataset = collect("pendulum/dict-v0", dict_obs=True, episodes=3, steps=15)
    folder = minari_root / "pendulum" / "dict-v0"
    out = tmp_path / "dict.hdf5"
    assert main(["convert", "minari", str(folder), "--out", str(out)]) == 0
    assert "3 demos, 45 transitions from pendulum/dict-v0" in capsys.readouterr().out
    with open_dataset(out) as df:
        assert sorted(df.obs_keys()) == ["angle", "velocity"]
        episode = next(iter(dataset.iterate_episodes()))
        np.testing.assert_array_equal(
            df.read("demo_0", "obs/angle"), episode.observations["angle"][:-1]
        )
        np.testing.assert_array_equal(
            df.read("demo_0", "next_obs/velocity"), episode.observations["velocity"][1:]
        )
    robomimic_dataset(out, ["angle", "velocity"])

    # not a Minari dataset: one line, exit code 2, nothing written
    assert main(["convert", "minari", str(tmp_path), "--out", str(tmp_path / "never.hdf5")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Minari dataset" in err
    assert not (tmp_path / "never.hdf5").exists()


def write_tricky_dataset(path) -> str:
    """Images, action_dict, states, model_file, ep_meta, filter keys, and one demo whose
    next_obs is not the shifted obs (so it cannot be rebuilt from Minari's observations)."""
    write_dataset(
        path,
        n_demos=4,
        cameras=("agentview",),
        image_size=32,
        action_dict=True,
        filter_keys={"train": ["demo_0", "demo_2", "demo_3"], "valid": ["demo_1"]},
    )
    rng = np.random.default_rng(7)
    with DatasetWriter(path, mode="a") as w:
        n = 9
        obs = {
            "robot0_eef_pos": rng.standard_normal((n, 3)).astype(np.float32),
            "object": rng.standard_normal((n, 10)).astype(np.float32),
            "agentview_image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        }
        nxt = {k: (v[::-1].copy()) for k, v in obs.items()}
        w.add_demo(
            actions=rng.uniform(-1, 1, (n, 7)),
            obs=obs,
            next_obs=nxt,
            rewards=rng.standard_normal(n),
            dones=np.array([0, 0, 0, 1, 0, 0, 0, 0, 1]),
            states=rng.standard_normal((n, 12)),
            action_dict={
                "abs_pos": rng.uniform(-1, 1, (n, 3)),
                "rel_rot_6d": rng.uniform(-1, 1, (n, 6)),
                "gripper": rng.uniform(-1, 1, (n, 1)),
            },
            model_file="<mujoco model='other'/>",
            ep_meta={"lang": "lift the cube"},
        )
    return str(path)


def assert_same_dataset(a_path, b_path):
    with open_dataset(a_path) as a, open_dataset(b_path) as b:
        assert a.demos == b.demos
        assert a.env_meta.to_dict() == b.env_meta.to_dict()
        assert {k: a.filter_key_demos(k) for k in a.filter_keys} == {
            k: b.filter_key_demos(k) for k in b.filter_keys
        }
        for demo in a.demos:
            keys = a.array_keys(demo)
            assert keys == b.array_keys(demo), demo
            for key in keys:
                va, vb = a.read(demo, key), b.read(demo, key)
                assert va.dtype == vb.dtype and np.array_equal(va, vb), (demo, key)
            assert a.demo_attrs(demo) == b.demo_attrs(demo)


def test_round_trip_robomimic_minari_robomimic(tmp_path, minari_root):
    import minari

    src = write_tricky_dataset(tmp_path / "lift.hdf5")
    export = export_minari(src, "robomimic/lift-v0", exact_images=True)
    assert export.dataset_dir == str(minari_root / "robomimic" / "lift-v0")
    assert export.image_keys == ["agentview_image"]

    loaded = minari.load_dataset("robomimic/lift-v0")
    assert loaded.total_episodes == 5 and loaded.total_steps == export.steps
    with open_dataset(src) as df:
        lengths = df.lengths().tolist()
        first_obj = df.read("demo_0", "obs/object")
        first_next = df.read("demo_0", "next_obs/object")
        first_actions = df.read("demo_0", "actions")
    episodes = list(loaded.iterate_episodes())
    assert [len(e.actions) for e in episodes] == lengths
    ep0 = episodes[0]
    assert ep0.observations["agentview_image"].shape == (lengths[0] + 1, 32, 32, 3)
    np.testing.assert_array_equal(ep0.observations["object"][:-1], first_obj)
    np.testing.assert_array_equal(ep0.observations["object"][-1], first_next[-1])
    np.testing.assert_array_equal(ep0.actions, first_actions)
    assert loaded.action_space.shape == (7,) and float(loaded.action_space.high[0]) == 1.0

    back = tmp_path / "back.hdf5"
    result = convert_minari("robomimic/lift-v0", back)
    assert result.restored_from_export
    assert_same_dataset(src, back)
    assert [f for f in validate(back) if f.level == "error"] == []
    ds = robomimic_dataset(
        back, ["robot0_eef_pos", "object"], ["agentview_image"], filter_key="train"
    )
    assert ds[0]["obs"]["agentview_image"].shape == (3, 32, 32, 3)


def test_export_to_folder_cli_and_jpeg_images(tmp_path, minari_root, capsys):
    import minari
    from minari import MinariDataset

    src = write_dataset(
        tmp_path / "lift.hdf5",
        n_demos=3,
        cameras=("agentview",),
        image_size=32,
        env_meta=LIFT_ENV,
        filter_keys={"train": ["demo_0", "demo_1"], "valid": ["demo_2"]},
    )
    folder = tmp_path / "exports" / "lift-train"
    assert main(["export", "minari", src, "--out", str(folder), "--filter-key", "train"]) == 0
    assert "lift-train-v0" in capsys.readouterr().out
    data = MinariDataset(str(folder / "data"))
    assert data.total_episodes == 2
    frames = next(iter(data.iterate_episodes())).observations["agentview_image"]
    assert frames.dtype == np.uint8 and frames.shape[1:] == (32, 32, 3)

    # an existing export is refused; no half-written folder is left beside it
    assert main(["export", "minari", src, "--out", str(folder)]) == 2
    assert "exists" in capsys.readouterr().err
    assert sorted(os.listdir(folder.parent)) == ["lift-train"]
    with pytest.raises(WriteError):
        export_minari(src, str(folder))

    # by id through the CLI, then back: JPEG images are close but not exact, the rest exact
    assert main(["export", "minari", src, "--out", "robomimic/lift-v1"]) == 0
    assert minari.load_dataset("robomimic/lift-v1").total_episodes == 3
    back = tmp_path / "back.hdf5"
    assert main(["convert", "minari", "robomimic/lift-v1", "--out", str(back)]) == 0
    with open_dataset(src) as a, open_dataset(back) as b:
        assert b.filter_key_demos("valid") == ["demo_2"]
        for demo in a.demos:
            np.testing.assert_array_equal(a.read(demo, "obs/object"), b.read(demo, "obs/object"))
            assert (
                b.read(demo, "obs/agentview_image").shape
                == a.read(demo, "obs/agentview_image").shape
            )


def test_bad_sources(tmp_path, minari_root):
    with pytest.raises(ConversionError, match="no Minari dataset"):
        convert_minari("nothing/here-v0", tmp_path / "x.hdf5")
    folder = tmp_path / "ds" / "data"
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text('{"data_format": "arrow"}')
    with pytest.raises(ConversionError, match="'arrow' storage is not supported"):
        convert_minari(folder.parent, tmp_path / "x.hdf5")
    assert not (tmp_path / "x.hdf5").exists()
