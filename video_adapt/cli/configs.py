"""List the configs shipped with the package, or print one (to copy and change).

    video-adapt configs                       # every shipped name: ssv2/adaptformer_8f, demo/base, methods/lora ...
    video-adapt configs ssv2                  # the names under ssv2/
    video-adapt configs ssv2/adaptformer_8f   # that file, with its _base_ chain resolved (--raw: as written)

`video-adapt train --config NAME` takes these names as well as paths; a file of your own may name one as its base
(`_base_: ssv2/adaptformer_8f`).
"""
from __future__ import annotations

import argparse
import sys

from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="a shipped config's name, or the start of one")
    parser.add_argument("--raw", action="store_true", help="print the file as written, without resolving _base_")
    args = parser.parse_args(argv)
    from video_adapt.errors import ConfigError
    from video_adapt.resources import config_names, shipped_config
    path = shipped_config(args.name) if args.name else None
    if path is None:
        prefix = (args.name or "").rstrip("/")
        names = [n for n in config_names() if not prefix or n == prefix or n.startswith(prefix + "/")]
        if not names:
            raise ConfigError(f"{args.name}: no shipped config has that name (`video-adapt configs` lists them)")
        print("\n".join(names))
        return 0
    if args.raw:
        print(path.read_text(), end="")
        return 0
    import yaml

    from video_adapt.config import read_config_values
    print(f"# {args.name}, its _base_ chain resolved ({path})")
    print(yaml.safe_dump(read_config_values(path), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
