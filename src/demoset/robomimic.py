"""robomimic's own training on demoset's loader: `install()`, `uninstall()`, `run_train_script()`.

robomimic's `train.py` gets its dataset from `robomimic.utils.train_utils.dataset_factory`,
which builds the `SequenceDataset` (and, in robomimic's later releases, the `MetaDataset`)
named in that module. `install()` points those two names at demoset's classes, which take
robomimic's keyword arguments (`demoset.loader.robomimic_compat`); `uninstall()` puts
robomimic's back. Nothing else of robomimic is changed, and nothing happens on import:

    import demoset.robomimic
    demoset.robomimic.install()      # robomimic's dataset_factory now builds demoset's
    ...                              # robomimic training code, unchanged
    demoset.robomimic.uninstall()

`run_train_script(argv)` runs robomimic's installed `scripts/train.py` as its command line
would, with demoset's loader (or robomimic's, for comparison), and raises a DemosetError
when the run fails (train.py itself only prints the error).

torchvision: robomimic imports it at import time (`robomimic.models`), and the torchvision
wheels on the package registry do not import beside a CPU-only torch build of another
version. `stub_torchvision_if_missing()` puts a stand-in in `sys.modules` only when the
real one does not import; robomimic's low-dim networks, its ShallowConv image backbone and
its crop randomizer never call torchvision, while its ResNet18Conv / R3M / MVP backbones
and ColorRandomizer do and then fail with a ConfigError saying so.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import sys
import types
from collections.abc import Iterator, Sequence

from demoset.errors import ConfigError, DemosetError

_ORIGINALS: dict[str, object] = {}
"""robomimic's classes that install() replaced, by name in train_utils (empty: not installed)."""

_TORCHVISION_MODULES = (
    "torchvision",
    "torchvision.transforms",
    "torchvision.transforms.functional",
    "torchvision.models",
)


class RobomimicRunError(DemosetError):
    """robomimic's train.py reported a failed run."""


# ---------------------------------------------------------------------------- torchvision
def stub_torchvision_if_missing() -> str | None:
    """Put a stand-in torchvision in sys.modules if the real one does not import.

    Returns None when torchvision imports (nothing is changed), else the import error's
    text. Every name of the stand-in is a function raising ConfigError when called, so a
    robomimic part that really needs torchvision stops with that message.
    """
    if "torchvision" in sys.modules:
        return None
    try:
        importlib.import_module("torchvision")
        return None
    except Exception as exc:  # noqa: BLE001 - any failure (missing, or built for another torch)
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    for name in _TORCHVISION_MODULES:  # a failed import may leave parts behind
        sys.modules.pop(name, None)

    def missing(module: str, attr: str):
        if attr.startswith("__"):  # module protocol names (__file__, __path__, ...): absent
            raise AttributeError(attr)

        def unavailable(*args, **kwargs):
            raise ConfigError(
                f"{module}.{attr} is needed but torchvision does not import here ({reason}); "
                "robomimic's ResNet18Conv/R3M/MVP backbones and ColorRandomizer need it: use "
                "backbone_class ShallowConv, or install a torchvision built for this torch"
            )

        unavailable.__name__ = attr
        return unavailable

    modules = {}
    for name in _TORCHVISION_MODULES:
        module = types.ModuleType(name, "demoset's stand-in: torchvision does not import here")
        module.__getattr__ = lambda attr, _name=name: missing(_name, attr)
        modules[name] = module
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision"].models = modules["torchvision.models"]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
    sys.modules.update(modules)
    return reason


# ---------------------------------------------------------------------------- install
def _train_utils() -> types.ModuleType:
    try:
        return importlib.import_module("robomimic.utils.train_utils")
    except ImportError as exc:
        hint = (
            "; call demoset.robomimic.stub_torchvision_if_missing() first"
            if "torchvision" in str(exc)
            else ""
        )
        raise ConfigError(f"robomimic does not import ({exc}){hint}") from None


def install() -> None:
    """Make robomimic's dataset factory build demoset's SequenceDataset and MetaDataset.

    Replaces `SequenceDataset` (and `MetaDataset` where robomimic has one) in
    `robomimic.utils.train_utils`, the module whose `dataset_factory` and
    `load_data_for_training` robomimic's train.py calls. Calling it twice is harmless.
    """
    from demoset.loader import SequenceDataset
    from demoset.loader.robomimic_meta import RobomimicMetaDataset

    tu = _train_utils()
    ours = {"SequenceDataset": SequenceDataset, "MetaDataset": RobomimicMetaDataset}
    for name, cls in ours.items():
        if not hasattr(tu, name):
            continue  # robomimic 0.3.0 has no MetaDataset
        if name not in _ORIGINALS:
            _ORIGINALS[name] = getattr(tu, name)
        setattr(tu, name, cls)


def uninstall() -> None:
    """Put robomimic's own classes back (a no-op when install() was not called)."""
    if not _ORIGINALS:
        return
    tu = _train_utils()
    for name, cls in list(_ORIGINALS.items()):
        setattr(tu, name, cls)
        del _ORIGINALS[name]


def is_installed() -> bool:
    """True between install() and uninstall()."""
    return bool(_ORIGINALS)


@contextlib.contextmanager
def installed(use_demoset: bool = True) -> Iterator[None]:
    """With-block with demoset's loader installed (or, use_demoset=False, robomimic's own).

    The state before the block comes back after it.
    """
    before = is_installed()
    if use_demoset:
        install()
    else:
        uninstall()
    try:
        yield
    finally:
        if before:
            install()
        else:
            uninstall()


# ---------------------------------------------------------------------------- train.py
def _is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":` at a module's top level."""
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def run_train_script(
    argv: Sequence[str], use_demoset: bool = True, fast_collate: bool = True
) -> None:
    """Run robomimic's installed `scripts/train.py` with command-line arguments `argv`.

    With `fast_collate` (and demoset's loader), the DataLoaders train.py builds get
    `collate_fn=demoset.loader.collate` (train.py passes none): the same batches, made into
    tensors without torch's per-sample stacking. False leaves train.py's DataLoader exactly
    as it is written (torch's default collate).

    The script's own argument parser and `main()` run (its `if __name__ == "__main__"`
    block, in the imported module), with demoset's loader installed for the run when
    `use_demoset` (robomimic's own loader otherwise). train.py prints a failure and returns
    normally; here a failed run raises: the DemosetError itself when demoset raised one,
    else RobomimicRunError. sys.argv, sys.stdout and sys.stderr (train.py redirects them
    to its log) and torch's thread count (train.py sets 2) are restored afterwards.
    Bad flags exit through argparse (SystemExit 2).
    """
    try:
        script = importlib.import_module("robomimic.scripts.train")
    except ImportError as exc:
        raise ConfigError(
            f"robomimic's train.py does not import ({exc}); is torchvision importable? "
            "see demoset.robomimic.stub_torchvision_if_missing()"
        ) from None
    source_path = inspect.getsourcefile(script) or script.__file__
    with open(source_path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), source_path)
    guards = [node for node in tree.body if _is_main_guard(node)]
    if not guards:
        raise ConfigError("robomimic's train.py has no __main__ block to run", source_path)
    block = compile(ast.Module(body=guards[0].body, type_ignores=[]), source_path, "exec")

    failures: list[BaseException] = []
    train = script.train

    def recording_train(*args, **kwargs):
        try:
            return train(*args, **kwargs)
        except Exception as exc:  # train.py's main() catches it and prints; keep it to raise
            failures.append(exc)
            raise

    import torch

    from demoset.loader import MetaDataset, SequenceDataset, collate

    data_loader = script.DataLoader

    def data_loader_with_collate(*args, **kwargs):
        dataset = kwargs.get("dataset", args[0] if args else None)
        if isinstance(dataset, (SequenceDataset, MetaDataset)):
            kwargs.setdefault("collate_fn", collate)
        return data_loader(*args, **kwargs)

    saved = sys.argv, sys.stdout, sys.stderr
    threads = torch.get_num_threads()  # train.py sets 2 for the whole process
    script.train = recording_train
    if use_demoset and fast_collate:
        script.DataLoader = data_loader_with_collate
    sys.argv = [source_path, *argv]
    try:
        with installed(use_demoset):
            exec(block, script.__dict__)  # noqa: S102 - robomimic's own code, from its installed file
    finally:
        script.train = train
        script.DataLoader = data_loader
        torch.set_num_threads(threads)
        logger = sys.stdout
        sys.argv, sys.stdout, sys.stderr = saved
        if logger is not saved[1] and hasattr(getattr(logger, "log_file", None), "close"):
            logger.log_file.close()  # train.py's PrintLogger keeps its log file open
    if failures:
        exc = failures[0]
        if isinstance(exc, DemosetError):
            raise exc
        first = (str(exc).strip().splitlines() or [""])[0]
        raise RobomimicRunError(f"robomimic's train.py failed: {type(exc).__name__}: {first}")
