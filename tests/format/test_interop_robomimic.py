"""Files written by demoset are read by robomimic 0.3.0 unchanged, and the other way round."""

from __future__ import annotations

import h5py
import numpy as np

from demoset.format import open_dataset, validate


def robomimic_dataset(path, obs_keys, rgb_keys=(), **kwargs):
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    ObsUtils.initialize_obs_utils_with_obs_specs(
        {"obs": {"low_dim": [k for k in obs_keys if k not in rgb_keys], "rgb": list(rgb_keys)}}
    )
    return SequenceDataset(
        hdf5_path=str(path),
        obs_keys=tuple(obs_keys),
        dataset_keys=("actions", "rewards", "dones"),
        hdf5_cache_mode=kwargs.pop("hdf5_cache_mode", "all"),
        **kwargs,
    )


def test_demoset_file_loads_in_robomimic_with_equal_values(make_dataset):
    path = make_dataset(
        n_demos=5,
        cameras=("agentview",),
        image_compression="lz4",
        filter_keys={"train": ["demo_1", "demo_3"]},
    )
    obs_keys = ["robot0_eef_pos", "object", "agentview_image"]
    ds = robomimic_dataset(
        path, obs_keys, rgb_keys=["agentview_image"], filter_by_attribute="train"
    )
    with open_dataset(path) as df:
        demos = df.demos_for("train")
        assert len(ds) == sum(df.num_samples(d) for d in demos)
        index = 0
        for demo in demos:
            actions = df.read(demo, "actions")
            image = df.read(demo, "obs/agentview_image")
            pos = df.read(demo, "obs/robot0_eef_pos")
            nxt = df.read(demo, "next_obs/object")
            for t in range(df.num_samples(demo)):
                sample = ds[index]
                index += 1
                # robomimic hands out float32 (its dataset casts on load)
                np.testing.assert_array_equal(sample["actions"][0], actions[t].astype(np.float32))
                np.testing.assert_array_equal(sample["obs"]["robot0_eef_pos"][0], pos[t])
                np.testing.assert_array_equal(sample["next_obs"]["object"][0], nxt[t])
                # robomimic's getitem returns raw uint8 HWC frames; it converts later in training
                np.testing.assert_array_equal(sample["obs"]["agentview_image"][0], image[t])


def test_robomimic_style_file_reads_in_demoset(tmp_path):
    """A file laid out the way robomimic's own scripts write it (h5py, env_args, no demoset attrs)."""
    path = tmp_path / "rm.hdf5"
    rng = np.random.default_rng(0)
    lengths = {"demo_0": 4, "demo_1": 6, "demo_10": 3, "demo_2": 5}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for name, n in lengths.items():
            g = data.create_group(name)
            g.create_dataset("actions", data=rng.uniform(-1, 1, (n, 7)))
            g.create_dataset("states", data=rng.standard_normal((n, 32)))
            g.create_dataset("rewards", data=np.zeros(n))
            g.create_dataset("dones", data=np.zeros(n))
            g.create_dataset("obs/object", data=rng.standard_normal((n, 10)))
            g.create_dataset("next_obs/object", data=rng.standard_normal((n, 10)))
            g.attrs["num_samples"] = n
            g.attrs["model_file"] = "<mujoco/>"
        data.attrs["total"] = sum(lengths.values())
        data.attrs["env_args"] = (
            '{"env_name": "Lift", "env_version": "1.4.1", "type": 1, "env_kwargs": {"control_freq": 20}}'
        )
        f["mask/valid"] = np.array(["demo_10", "demo_2"], dtype="S")
    assert validate(path) == []
    with open_dataset(path) as df:
        assert df.demos == ["demo_0", "demo_1", "demo_2", "demo_10"]
        assert df.total == 18 and df.env_meta.env_kwargs == {"control_freq": 20}
        assert df.env_meta.to_dict()["env_version"] == "1.4.1"
        assert df.demos_for("valid") == ["demo_2", "demo_10"]
