"""The simulator pipeline end to end with the real robosuite 1.5.2 / mujoco 3.3.7 (OSMesa).

One run per test session collects two scripted Lift demos (recorded by robosuite's own
DataCollectionWrapper), converts them, and extracts observations with one and with two
worker processes; the tests below check each stage against the simulator, against each
other and against robomimic 0.3.0's SequenceDataset. Cameras are 32x32 to keep the
rendering cheap; the sizes do not matter to what is checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import h5py
import numpy as np
import pytest

from demoset.cli.main import main
from demoset.errors import SimulationError
from demoset.format import open_dataset, validate

pytestmark = [pytest.mark.sim, pytest.mark.xdist_group("sim")]

CAMERAS = ["agentview", "robot0_eye_in_hand"]
SIZE = 32
# Observations that are functions of joint positions / velocities only: exact after a reset
# to the stored state. Cartesian ones (site and body positions) come from forward kinematics;
# during collection robosuite's step reports them from before the last physics substep
# (lite_physics), so they differ by one substep of motion. joint_acc is not part of the state.
EXACT_KEYS = [
    "robot0_joint_pos",
    "robot0_joint_pos_cos",
    "robot0_joint_pos_sin",
    "robot0_joint_vel",
    "robot0_gripper_qpos",
    "robot0_gripper_qvel",
]
CARTESIAN_KEYS = ["robot0_eef_pos", "object", "robot0_eef_quat"]


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def all_arrays(path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        f.visititems(visit)
    return out


def build_pipeline(d) -> None:
    """Collect, convert and extract into directory `d`; reports go to JSON and npz files."""
    from demoset.convert.robosuite_raw import convert_robosuite_raw
    from demoset.sim import make_env
    from demoset.sim.collect import collect_demos
    from demoset.sim.extract import extract_obs

    raw = d / "raw.hdf5"
    collected = collect_demos("Lift", 2, raw, seed=3, record_obs=True)
    convert_robosuite_raw(raw, d / "lift.hdf5", val_ratio=0.5, action_dict=True, make_env=make_env)
    calls: list[tuple[int, int]] = []
    ext = {}
    # workers 1 and 2 keep the rendering context between demos; 0 stands for one worker
    # building a fresh simulator and context for every demo (reuse_renderer=False)
    for workers in (1, 2, 0):
        report = extract_obs(
            d / "lift.hdf5",
            d / f"image_w{workers}.hdf5",
            camera_names=CAMERAS,
            camera_height=SIZE,
            camera_width=SIZE,
            depth=True,
            done_mode=2,
            compression="gzip",  # readable by plain h5py and robomimic (lz4 needs hdf5plugin)
            workers=max(workers, 1),
            progress=(lambda done, total: calls.append((done, total))) if workers == 1 else None,
            reuse_renderer=workers != 0,
        )
        ext[workers] = dict(
            output=report.output,
            workers=report.workers,
            demos=report.demos,
            frames=report.frames,
            black_frames=report.black_frames,
        )
    for i, (obs, final) in enumerate(zip(collected.observations, collected.final_observations)):
        np.savez(d / f"collected_obs_{i}.npz", **obs)
        np.savez(d / f"collected_final_{i}.npz", **final)
    meta = dict(
        raw_hash=sha256(raw),
        kept=collected.kept,
        attempts=collected.attempts,
        lengths=collected.lengths,
        calls=calls,
        ext=ext,
    )
    (d / "pipeline.json").write_text(json.dumps(meta))


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """The pipeline's files, built once per test session.

    Under pytest-xdist every worker process would build its own copy, so the first worker
    builds it in the directory the workers share and the others wait for it (a file lock).
    """
    import fcntl
    from types import SimpleNamespace

    if os.environ.get("PYTEST_XDIST_WORKER"):
        d = tmp_path_factory.getbasetemp().parent / "sim_pipeline"
    else:
        d = tmp_path_factory.mktemp("sim_pipeline")
    d.mkdir(exist_ok=True)
    with open(d.parent / "sim_pipeline.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / "pipeline.json").exists():
            build_pipeline(d)
    meta = json.loads((d / "pipeline.json").read_text())
    n = len(meta["lengths"])

    def load(name: str, i: int) -> dict[str, np.ndarray]:
        with np.load(d / f"{name}_{i}.npz") as z:
            return {k: z[k] for k in z.files}

    collected = SimpleNamespace(
        kept=meta["kept"],
        attempts=meta["attempts"],
        lengths=meta["lengths"],
        observations=[load("collected_obs", i) for i in range(n)],
        final_observations=[load("collected_final", i) for i in range(n)],
    )
    ext = {int(w): SimpleNamespace(**r) for w, r in meta["ext"].items()}
    calls = [tuple(c) for c in meta["calls"]]
    return dict(
        dir=d,
        raw=d / "raw.hdf5",
        raw_hash=meta["raw_hash"],
        conv=d / "lift.hdf5",
        collected=collected,
        ext=ext,
        calls=calls,
    )


# ---------------------------------------------------------------------------- collect
def test_collected_raw_file_has_robosuite_layout(pipeline):
    report = pipeline["collected"]
    assert report.kept == 2 and report.attempts >= 2 and report.lengths
    with h5py.File(pipeline["raw"], "r") as f:
        data = f["data"]
        assert set(data.attrs) == {"date", "time", "repository_version", "env", "env_info"}
        assert data.attrs["env"] == "Lift"
        assert data.attrs["repository_version"] == "1.5.2"
        info = json.loads(data.attrs["env_info"])
        assert set(info) == {"env_name", "robots", "controller_configs"}
        assert list(data.keys()) == ["demo_1", "demo_2"]  # robosuite numbers from 1
        for i, demo in enumerate(["demo_1", "demo_2"]):
            grp = data[demo]
            assert set(grp.keys()) == {"states", "actions"}
            assert grp["states"].shape == (report.lengths[i], 32)  # time + qpos (16) + qvel (15)
            assert grp["actions"].shape == (report.lengths[i], 7)
            assert grp.attrs["model_file"].startswith("<mujoco")
            assert np.all(np.abs(grp["actions"][()]) <= 1.0)


# ---------------------------------------------------------------------------- convert
def test_convert_writes_robomimic_layout_and_leaves_raw_untouched(pipeline):
    assert sha256(pipeline["raw"]) == pipeline["raw_hash"]
    # the only complaint about a converted file: it has no observations yet
    findings = [f for f in validate(pipeline["conv"]) if f.level == "error"]
    assert {f.code for f in findings} <= {"raw_robosuite"}
    with open_dataset(pipeline["conv"]) as df, h5py.File(pipeline["raw"], "r") as raw:
        meta = df.env_meta
        assert meta.env_name == "Lift" and meta.env_type == 1
        assert meta.extra["env_version"] == "1.5.2"
        assert meta.env_kwargs == json.loads(raw["data"].attrs["env_info"])
        assert df.demos == ["demo_1", "demo_2"]
        assert df.total == sum(pipeline["collected"].lengths)
        for demo in df.demos:
            assert df.num_samples(demo) == raw[f"data/{demo}/actions"].shape[0]
            np.testing.assert_array_equal(df.read(demo, "states"), raw[f"data/{demo}/states"][()])
            assert df.demo_attrs(demo)["model_file"] == raw[f"data/{demo}"].attrs["model_file"]
        assert sorted(df.filter_key_demos("train") + df.filter_key_demos("valid")) == df.demos
        assert len(df.filter_key_demos("valid")) == 1
        ad = df.action_dict_keys()
        assert set(ad) == {
            "abs_pos",
            "abs_rot_axis_angle",
            "abs_rot_6d",
            "rel_pos",
            "rel_rot_axis_angle",
            "rel_rot_6d",
            "gripper",
        }
        actions = df.read("demo_1", "actions")
        np.testing.assert_allclose(
            df.read("demo_1", "action_dict/rel_pos"), actions[:, :3], rtol=1e-6
        )
        np.testing.assert_allclose(df.read("demo_1", "action_dict/gripper")[:, 0], actions[:, 6])


def test_absolute_actions_drive_an_absolute_controller_along_the_demo(pipeline):
    """Replaying abs_pos/abs_rot with an OSC controller in absolute mode follows the demo."""
    from demoset.sim import make_env

    with open_dataset(pipeline["conv"]) as df:
        meta = df.env_meta
        kwargs = json.loads(json.dumps(meta.env_kwargs))
        arm = kwargs["controller_configs"]["body_parts"]["right"]
        arm.update(input_type="absolute", input_max=10, input_min=-10)
        abs_actions = np.concatenate(
            [
                df.read("demo_1", "action_dict/abs_pos"),
                df.read("demo_1", "action_dict/abs_rot_axis_angle"),
                df.read("demo_1", "action_dict/gripper"),
            ],
            axis=1,
        )
        states = df.read("demo_1", "states")
        model = df.demo_attrs("demo_1")["model_file"]
    env = make_env({"env_name": "Lift", "type": 1, "env_kwargs": kwargs})
    stored = make_env(meta)
    try:
        env.reset_to({"model": model, "states": states[0]})
        stored.reset_to({"model": model, "states": states[0]})
        errors = []
        for t in range(len(abs_actions) - 1):
            env.step(abs_actions[t])
            eef = env.get_observation()["robot0_eef_pos"]
            expected = stored.reset_to({"states": states[t + 1]})["robot0_eef_pos"]
            errors.append(np.abs(eef - expected).max())
        assert max(errors) < 0.01  # metres
        assert env.is_success()
    finally:
        env.close()
        stored.close()


# ---------------------------------------------------------------------------- extract
def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), key


def test_extraction_with_a_kept_renderer_equals_a_fresh_simulator_per_demo(pipeline):
    kept, fresh = pipeline["ext"][1], pipeline["ext"][0]
    assert_same_arrays(all_arrays(kept.output), all_arrays(fresh.output))
    with h5py.File(kept.output, "r") as f, h5py.File(fresh.output, "r") as g:
        assert f["data"].attrs["env_args"] == g["data"].attrs["env_args"]


def test_renderer_is_kept_across_demo_models_and_draws_the_same_frames(pipeline):
    """Demo 2's model (another cube size) reuses demo 1's rendering context, pixel-exact."""
    from demoset.sim.factory import make_env

    with open_dataset(pipeline["conv"]) as df:
        meta = df.env_meta
        models = [df.demo_attrs(demo)["model_file"] for demo in df.demos]
        states = [df.read(demo, "states") for demo in df.demos]
    assert models[0] != models[1]
    seen = {}
    for reuse in (True, False):
        env = make_env(
            meta,
            camera_names=CAMERAS,
            camera_height=SIZE,
            camera_width=SIZE,
            use_depth=True,
            fast_reset=True,
            reuse_renderer=reuse,
        )
        try:
            env.reset_to({"model": models[0], "states": states[0][0]})
            context = env.env.sim._render_context_offscreen
            first = env.reset_to({"model": models[1], "states": states[1][0]})
            kept = env.env.sim._render_context_offscreen is context
            last = env.reset_to({"states": states[1][-1]})
        finally:
            env.close()
        seen[reuse] = (kept, first, last)
    assert seen[True][0] and not seen[False][0]
    for i in (1, 2):
        assert_same_arrays(seen[True][i], seen[False][i])
    assert seen[True][1]["agentview_image"].max() > 0


def test_extraction_is_identical_for_one_and_two_workers(pipeline):
    one, two = pipeline["ext"][1], pipeline["ext"][2]
    assert one.workers == 1 and two.workers == 2
    a, b = all_arrays(one.output), all_arrays(two.output)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), key
    with h5py.File(one.output, "r") as f, h5py.File(two.output, "r") as g:
        assert f["data"].attrs["env_args"] == g["data"].attrs["env_args"]
        for demo in ("demo_1", "demo_2"):
            assert f[f"data/{demo}"].attrs["model_file"] == g[f"data/{demo}"].attrs["model_file"]


def test_extracted_file_contents(pipeline):
    report = pipeline["ext"][1]
    total = sum(pipeline["collected"].lengths)
    assert report.demos == 2 and report.frames == total and report.black_frames == []
    assert pipeline["calls"][-1] == (total, total)
    assert not any(f.level == "error" for f in validate(report.output))
    with open_dataset(report.output) as df:
        meta = df.env_meta
        assert (
            meta.env_kwargs["camera_names"] == CAMERAS and meta.env_kwargs["use_camera_obs"] is True
        )
        keys = df.obs_keys()
        for cam in CAMERAS:
            assert (
                keys[f"{cam}_image"].shape == (SIZE, SIZE, 3)
                and keys[f"{cam}_image"].dtype == np.uint8
            )
            assert (
                keys[f"{cam}_depth"].shape == (SIZE, SIZE, 1)
                and keys[f"{cam}_depth"].dtype == np.float32
            )
            assert (
                df.dataset("demo_1", f"obs/{cam}_image").compression is not None
                or df.dataset("demo_1", f"obs/{cam}_image").chunks
            )
        depth = df.read("demo_1", "obs/agentview_depth")
        assert (
            0.2 < float(depth.min()) and float(depth.max()) < 10.0
        )  # metres, not the 0..1 z-buffer
        assert sorted(df.filter_keys) == ["train", "valid"]
        assert df.action_dict_keys()  # copied from the input
        for demo in df.demos:
            n = df.num_samples(demo)
            obs = df.read(demo, "obs/robot0_eef_pos")
            nxt = df.read(demo, "next_obs/robot0_eef_pos")
            np.testing.assert_array_equal(nxt[:-1], obs[1:])
            dones = df.read(demo, "dones")
            rewards = df.read(demo, "rewards")
            assert dones.shape == (n,) and dones[-1] == 1  # done_mode 2: last step
            assert rewards[-1] == 1.0  # the demo ends lifted (sparse reward)
            # done_mode 2 also marks every step whose next state succeeds
            np.testing.assert_array_equal(dones[:-1], (rewards[:-1] > 0).astype(dones.dtype))


def test_extracted_obs_match_what_the_simulator_gave_during_collection(pipeline):
    collected = pipeline["collected"]
    with open_dataset(pipeline["ext"][1].output) as df:
        for i, demo in enumerate(df.demos):
            recorded = collected.observations[i]
            final = collected.final_observations[i]
            for key in EXACT_KEYS:
                np.testing.assert_allclose(
                    df.read(demo, f"obs/{key}"), recorded[key], rtol=0, atol=1e-9, err_msg=key
                )
                np.testing.assert_allclose(
                    df.read(demo, f"next_obs/{key}")[-1], final[key], rtol=0, atol=1e-6, err_msg=key
                )
            for key in CARTESIAN_KEYS:
                np.testing.assert_allclose(
                    df.read(demo, f"obs/{key}"), recorded[key], rtol=0, atol=2e-3, err_msg=key
                )
                np.testing.assert_allclose(
                    df.read(demo, f"next_obs/{key}")[-1], final[key], rtol=0, atol=2e-3, err_msg=key
                )


def test_robomimic_sequence_dataset_reads_every_output(pipeline):
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    image_keys = [f"{c}_image" for c in CAMERAS]
    ObsUtils.initialize_obs_utils_with_obs_specs(
        {
            "obs": {
                "low_dim": ["robot0_eef_pos", "object"],
                "rgb": image_keys,
                "depth": ["agentview_depth"],
            }
        }
    )
    for workers in (1, 2):
        ds = SequenceDataset(
            str(pipeline["ext"][workers].output),
            obs_keys=("robot0_eef_pos", "object", *image_keys, "agentview_depth"),
            dataset_keys=("actions", "rewards", "dones"),
            seq_length=10,
            hdf5_cache_mode="low_dim",
            filter_by_attribute="train",
        )
        item = ds[3]
        assert item["actions"].shape == (10, 7)
        assert item["obs"]["agentview_image"].shape[0] == 10
    ds = SequenceDataset(
        str(pipeline["conv"]),
        obs_keys=(),
        dataset_keys=("actions",),
        seq_length=5,
        load_next_obs=False,
    )
    assert len(ds) == sum(pipeline["collected"].lengths)
    assert ds[0]["actions"].shape == (5, 7)


def test_failed_demo_is_named_and_leaves_no_output(pipeline, tmp_path):
    from demoset.sim.extract import extract_obs

    broken = tmp_path / "broken.hdf5"
    shutil.copy(pipeline["conv"], broken)
    with h5py.File(broken, "r+") as f:
        states = f["data/demo_2/states"][()]
        del f["data/demo_2/states"]
        f["data/demo_2/states"] = states[:, :20]  # a state vector of another model
    out = tmp_path / "out.hdf5"
    with pytest.raises(SimulationError) as info:
        extract_obs(broken, out, workers=2)
    message = str(info.value)
    assert "/data/demo_2" in message and "20 values" in message
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["broken.hdf5"]  # no temporary leftovers


# ---------------------------------------------------------------------------- playback and video
def test_open_loop_replay_follows_the_states_and_reports_divergence(pipeline, tmp_path):
    from demoset.sim.playback import replay_dataset

    results = replay_dataset(str(pipeline["conv"]))
    assert [r.first_divergence for r in results] == [None, None]
    assert all(r.success for r in results)

    perturbed = tmp_path / "perturbed.hdf5"
    shutil.copy(pipeline["conv"], perturbed)
    with h5py.File(perturbed, "r+") as f:
        f["data/demo_1/actions"][10, :3] = [1.0, -1.0, 1.0]
    (result,) = replay_dataset(str(perturbed), demos=["demo_1"])
    assert result.first_divergence == 10
    assert np.all(result.errors[:10] == 0.0)


def test_videos_from_obs_states_and_actions(pipeline, tmp_path):
    import imageio.v2 as imageio

    from demoset.viz.video import write_video

    path = pipeline["ext"][1].output
    lengths = pipeline["collected"].lengths

    from_obs = write_video(
        path, tmp_path / "obs.mp4", source="obs", camera_names=CAMERAS, video_skip=1, depth=True
    )
    reader = imageio.get_reader(tmp_path / "obs.mp4")
    assert reader.count_frames() == sum(lengths) == from_obs.frames
    assert reader.get_data(0).shape == (SIZE, 4 * SIZE, 3)  # image | depth | image | depth
    reader.close()

    skip = 20
    write_video(
        path,
        tmp_path / "states.mp4",
        source="states",
        camera_names=["agentview"],
        n=1,
        video_skip=skip,
        height=48,
        width=64,
    )
    reader = imageio.get_reader(tmp_path / "states.mp4")
    assert reader.count_frames() == len(range(0, lengths[0], skip))
    assert reader.get_data(0).shape == (48, 64, 3)
    reader.close()
    # the rendered first frame is the stored 32x32 observation's scene: same layout, upright
    first_obs = imageio.get_reader(tmp_path / "obs.mp4").get_data(0)[:, :SIZE].astype(float)
    assert first_obs.mean() > 30  # not black

    from_actions = write_video(
        path,
        tmp_path / "actions.mp4",
        source="actions",
        n=1,
        seed=5,
        video_skip=skip,
        height=32,
        width=32,
    )
    assert list(from_actions.divergence.values()) == [None]
    reader = imageio.get_reader(tmp_path / "actions.mp4")
    assert reader.count_frames() == from_actions.frames
    reader.close()


# ---------------------------------------------------------------------------- the commands
def test_cli_extract_from_raw_and_playback(pipeline, tmp_path, capsys):
    out = tmp_path / "lowdim.hdf5"
    code = main(
        [
            "extract-obs",
            "--dataset",
            str(pipeline["raw"]),
            "--out",
            str(out),
            "--n",
            "1",
            "--exclude-next-obs",
            "--done_mode",
            "1",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "1 demos" in text and "frames/s" in text
    with open_dataset(out) as df:
        assert df.demos == ["demo_1"] and not df.next_obs_keys()
        assert "robot0_eef_pos" in df.obs_keys() and df.env_meta.env_name == "Lift"
        assert df.read("demo_1", "dones").sum() == 1

    code = main(["playback", str(pipeline["conv"]), "--use-actions", "--n", "1"])
    assert code == 0
    assert "followed the stored states in all 1 demos" in capsys.readouterr().out

    video = tmp_path / "v.mp4"
    code = main(
        [
            "playback",
            "--dataset",
            str(pipeline["ext"][1].output),
            "--use-obs",
            "--video_path",
            str(video),
            "--render_image_names",
            "agentview_image",
            "--first",
        ]
    )
    assert code == 0 and video.exists()
    assert "2 demos from obs" in capsys.readouterr().out

    code = main(
        [
            "convert",
            "robosuite",
            str(pipeline["raw"]),
            "--out",
            str(tmp_path / "c.hdf5"),
            "--no-split",
        ]
    )
    assert code == 0
    with open_dataset(tmp_path / "c.hdf5") as df:
        assert df.filter_keys == [] and df.env_meta.env_name == "Lift"


def test_cli_refuses_bad_input_with_one_line(pipeline, tmp_path, capsys):
    code = main(["extract-obs", str(tmp_path / "missing.hdf5"), "--out", str(tmp_path / "x.hdf5")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.hdf5" in err[0]
    code = main(["extract-obs", str(pipeline["conv"]), "--out", str(pipeline["conv"])])
    assert code == 2
    code = main(["playback", str(pipeline["conv"])])
    assert code == 2 and "nothing to do" in capsys.readouterr().err
