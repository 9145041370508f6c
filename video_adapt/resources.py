"""Files the package ships and finds at run time, wherever it is installed: the configs (recipes, the embedded
benchmark's grids) and the demo backbone. Everything is found through `importlib.resources`, never through a
repository path, so `pip install video_adapt` works from any folder.

A config is named by its path under the shipped `configs/` folder without `.yaml` (`ssv2/adaptformer_8f`,
`demo/base`); `video-adapt configs` lists them. A name may also be written as the repository path
(`video_adapt/configs/ssv2/adaptformer_8f.yaml`) or with the `configs/` prefix the docs of earlier versions used.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from video_adapt.errors import ConfigError

DEMO_BACKBONE_NAME = "demo"  # model.pretrained=demo: the embedded benchmark's committed backbone


def package_dir(*parts: str) -> Path:
    """A folder or file inside the installed package, as a real path (configs name their `_base_` files by
    relative paths, so they must be real files, as they are in a wheel or an editable install)."""
    root = resources.files("video_adapt").joinpath(*parts)
    if not isinstance(root, Path):
        raise ConfigError(f"video_adapt is installed in a form that has no real files ({type(root).__name__}); "
                          "install it from the wheel or the source folder")
    return root


def configs_dir() -> Path:
    return package_dir("configs")


def demo_backbone() -> Path:
    """The embedded benchmark's backbone (vit_tiny_patch8_32), committed in the package's assets."""
    return package_dir("assets", "demo_backbone.safetensors")


def config_names() -> list[str]:
    """Every shipped config's name, sorted."""
    root = configs_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def shipped_config(name: str) -> Path | None:
    """The shipped config called `name` (`ssv2/adaptformer_8f`, `configs/ssv2/adaptformer_8f.yaml`, ...), or None."""
    text = name.replace("\\", "/").strip()
    for prefix in ("video_adapt/configs/", "configs/"):
        text = text.removeprefix(prefix)
    text = text.removesuffix(".yaml").removesuffix(".yml")
    if not text or text.startswith(("/", "..")):
        return None
    path = configs_dir() / f"{text}.yaml"
    return path if path.is_file() else None


def resolve_config(name: str | Path) -> Path:
    """A config file the user named: a file on disk first, else a shipped config; one-line error otherwise."""
    path = Path(name)
    if path.is_file():
        return path.resolve()
    shipped = shipped_config(str(name))
    if shipped is not None:
        return shipped
    raise ConfigError(f"{name}: config file not found, and no shipped config has that name "
                      "(`video-adapt configs` lists them)")


def resolve_pretrained(value: str | None) -> str | None:
    """`model.pretrained=demo` is the committed demo backbone; anything else is a path (or none) as given."""
    return str(demo_backbone()) if value == DEMO_BACKBONE_NAME else value


def repository_root(needed_by: str) -> Path:
    """The checkout this package runs from, for repository tooling (the GPU check runs tools/*.py, a benchmark takes
    an old commit from git); from an installed package, a one-line error naming what needs the checkout."""
    root = Path(__file__).resolve().parents[1]
    if not ((root / "tools").is_dir() and (root / "pyproject.toml").is_file()):
        raise ConfigError(f"{needed_by} runs the repository's own tools and needs a checkout of the repository "
                          f"(this video_adapt is installed at {root / 'video_adapt'})")
    return root
