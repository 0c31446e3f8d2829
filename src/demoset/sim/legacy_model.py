"""A model XML stored by robosuite 1.0-1.4 made loadable by robosuite 1.5's environment code.

Two things stand between such a model and robosuite 1.5, and both are fixed here without
touching its physics or its looks:

- asset files: the recording version's own meshes and textures (legacy_assets.py);
- names: robosuite 1.5 names every gripper by arm (`gripper0_right_...` where 1.0-1.4 wrote
  `gripper0_...`) and every fixed mount `fixed_mount0_...` (was `mount0_...`), and its
  controllers read each arm's base pose from a site `robot0_right_center`. Names are
  renamed consistently throughout the model (definitions and references alike), and the
  missing site is added to the robot's first link (`link0`, else its base body), at the
  body origin, invisible (hidden site group 5, transparent), so it changes no simulated
  quantity and no rendered pixel.

A model that already has robosuite 1.5 names is left as it is.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from demoset.errors import SimulationError
from demoset.sim.legacy_assets import prepare_model_xml

_OLD_GRIPPER = re.compile(r"^gripper(\d+)_(?!right_|left_)")
_OLD_MOUNT = re.compile(r"^mount(\d+)_")
_ROBOT_BODY = re.compile(r"^robot(\d+)_(link0|base)$")


def _rename(value: str) -> str:
    value = _OLD_GRIPPER.sub(lambda m: f"gripper{m.group(1)}_right_", value)
    return _OLD_MOUNT.sub(lambda m: f"fixed_mount{m.group(1)}_", value)


def has_legacy_names(root: ET.Element) -> bool:
    """Whether a parsed model uses robosuite 1.0-1.4 gripper / mount names."""
    for elem in root.iter():
        name = elem.get("name")
        if name and (_OLD_GRIPPER.match(name) or _OLD_MOUNT.match(name)):
            return True
    return False


def _add_center_sites(root: ET.Element) -> None:
    """A `robotN_<arm>_center` site for every robot (and arm) that lacks one."""
    sites = {e.get("name") for e in root.iter("site")}
    bodies: dict[str, dict[str, ET.Element]] = {}
    for body in root.iter("body"):
        match = _ROBOT_BODY.match(body.get("name") or "")
        if match:
            bodies.setdefault(match.group(1), {})[match.group(2)] = body
    names = " ".join(e.get("name") or "" for e in root.iter())
    for idn, found in sorted(bodies.items()):
        parent = found.get("link0", found.get("base"))
        arms = ["right"] + (["left"] if f"gripper{idn}_left_" in names else [])
        for arm in arms:
            name = f"robot{idn}_{arm}_center"
            if name in sites:
                continue
            site = ET.Element(
                "site",
                {"name": name, "pos": "0 0 0", "size": "0.01", "rgba": "0 0 0 0", "group": "5"},
            )
            parent.insert(0, site)


def modern_names(xml: str) -> str:
    """A robosuite 1.0-1.4 model XML with the names robosuite 1.5's code looks up."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise SimulationError(f"cannot load the stored model XML: {exc}") from None
    if not has_legacy_names(root):
        return xml
    for elem in root.iter():
        for attr, value in elem.attrib.items():
            renamed = _rename(value)
            if renamed != value:
                elem.set(attr, renamed)
    _add_center_sites(root)
    return ET.tostring(root, encoding="unicode")


def prepare_stored_model(xml: str, recorded_version: str | None) -> str:
    """A stored model XML (after robosuite's own path edit) ready for robosuite 1.5."""
    return modern_names(prepare_model_xml(xml, recorded_version))
