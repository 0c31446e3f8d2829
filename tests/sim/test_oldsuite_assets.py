"""Asset files of the recording robosuite version: cache, offline folder, name match, errors."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import mujoco
import pytest

from demoset.errors import SimulationError
from demoset.sim import legacy_assets as LA
from demoset.sim.legacy_model import modern_names, prepare_stored_model

from tests.sim import oldsuite_support as support
from tests.sim.oldsuite_support import VERSION, stored_xml

assets_141, offline = support.assets_141, support.offline  # fixtures used here

STATE_SIZE = 32  # 1 + nq + nv of the fixture's Lift/Panda scene, as stored


def _asset_files(xml: str) -> list[str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    return [e.get("file") for e in root.find("asset") if e.get("file")]


def _state_size(xml: str) -> int:
    model = mujoco.MjModel.from_xml_string(xml)
    return 1 + model.nq + model.nv


def test_versions():
    assert LA.parse_version("1.4.1") == (1, 4, 1)
    assert LA.parse_version("1.5") == (1, 5, 0)
    assert LA.parse_version("not a version") is None
    assert LA.needs_own_assets("1.4.1", "1.5.2")
    assert LA.needs_own_assets("1.0.0", "1.5.2")
    assert not LA.needs_own_assets("1.5.0", "1.5.2")
    assert not LA.needs_own_assets(None, "1.5.2")
    assert LA.version_from_xml('<mesh file="/x/robosuite-1.2.0/robosuite/a.stl"/>') == "1.2.0"
    assert LA.version_from_xml(stored_xml()) is None


def test_archive_members_outside_assets_or_unsafe_are_not_extracted(tmp_path):
    members = {
        "robosuite/models/assets/robots/panda/meshes/link0.stl": b"mesh",
        "robosuite/models/assets/bullet_data/panda.urdf": b"urdf",
        "robosuite/models/assets/../../../escape.txt": b"no",
        "robosuite/environments/base.py": b"code",
    }
    wheel = tmp_path / "robosuite-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    sdist = tmp_path / "robosuite-9.9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo("robosuite-9.9.9/" + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    for archive in (wheel, sdist):
        dest = tmp_path / archive.name.split(".")[0] / "assets"
        LA._extract_assets(archive, dest)
        found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
        assert found == ["robots/panda/meshes/link0.stl"]
    assert not (tmp_path / "escape.txt").exists()


def test_stored_v141_model_loads_with_its_own_assets(offline):
    xml = prepare_stored_model(stored_xml(), VERSION)
    files = _asset_files(xml)
    assert files and all(f.startswith(str(offline)) for f in files)
    assert all(os.path.isfile(f) for f in files)
    assert _state_size(xml) == STATE_SIZE


def test_missing_file_is_matched_by_its_unique_name(offline):
    # robosuite 1.0 recordings name robots/panda/meshes/pedestal.stl, which their release
    # ships elsewhere; the same happens here with 1.4.1's mounts/.../pedestal.stl.
    old = "mounts/meshes/rethink_mount/pedestal.stl"
    xml = stored_xml()
    assert old in xml
    xml = xml.replace(old, "robots/panda/meshes/pedestal.stl")
    resolved = LA.use_recorded_assets(xml, VERSION)
    assert str(offline / old) in resolved
    assert _state_size(modern_names(resolved)) == STATE_SIZE


def test_offline_folder_from_the_environment_variable(tmp_path, monkeypatch, offline):
    folder = tmp_path / "assets-from-usb"
    (folder / VERSION / "models").mkdir(parents=True)
    os.symlink(offline, folder / VERSION / "models" / "assets")
    monkeypatch.setenv("DEMOSET_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("DEMOSET_ROBOSUITE_ASSETS", str(folder))
    root = LA.assets_dir(VERSION)
    assert root == folder / VERSION / "models" / "assets"
    xml = prepare_stored_model(stored_xml(), VERSION)
    assert all(f.startswith(str(folder)) for f in _asset_files(xml))
    assert _state_size(xml) == STATE_SIZE
    assert not (tmp_path / "empty-cache").exists()  # nothing was fetched


def test_missing_asset_names_file_version_and_way_out(tmp_path, monkeypatch, offline):
    folder = tmp_path / "partial" / "models" / "assets"
    (folder / "robots").mkdir(parents=True)
    monkeypatch.setenv("DEMOSET_ROBOSUITE_ASSETS", str(tmp_path / "partial"))
    with pytest.raises(SimulationError) as info:
        prepare_stored_model(stored_xml(), VERSION)
    message = info.value.one_line()
    assert "\n" not in message
    assert VERSION in message and "DEMOSET_ROBOSUITE_ASSETS" in message
    first = LA._relative_to_assets(_asset_files(stored_xml())[0])
    assert first in message


def test_uncached_version_with_downloads_off_says_so(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("DEMOSET_CACHE_DIR", str(tmp_path))
    with pytest.raises(SimulationError) as info:
        prepare_stored_model(stored_xml(), "1.2.0")
    message = info.value.one_line()
    assert "1.2.0" in message and "DEMOSET_ROBOSUITE_ASSETS" in message
    assert "DEMOSET_NO_DOWNLOAD" in message
    assert list(tmp_path.iterdir()) == []


def test_unknown_version_with_missing_files_asks_for_it(monkeypatch, offline):
    xml = stored_xml().replace("/root/", "/nowhere/")
    with pytest.raises(SimulationError, match="DEMOSET_ROBOSUITE_VERSION"):
        LA.prepare_model_xml(xml, None)
    monkeypatch.setenv("DEMOSET_ROBOSUITE_VERSION", VERSION)
    assert _state_size(modern_names(LA.prepare_model_xml(xml, None))) == STATE_SIZE


def test_names_of_old_models_become_robosuite_15_names(offline):
    xml = modern_names(LA.use_recorded_assets(stored_xml(), VERSION))
    assert 'name="gripper0_right_grip_site"' in xml
    assert 'name="fixed_mount0_pedestal"' in xml
    assert 'name="robot0_right_center"' in xml
    assert 'name="gripper0_grip_site"' not in xml
    assert modern_names(xml) == xml  # already robosuite 1.5 names: unchanged
