"""Write the dataset x method x frames grid of configs/ (each file only names its three bases).

    python tools/make_configs.py   # regenerates configs/<dataset>/<method>_<frames>f.yaml
                                   # and configs/<backbone>/<dataset>/adaptformer_16f.yaml (VideoMAE V2)
Datasets: the files in configs/datasets/; methods: the article's four (video_adapt/config_grid.py).
"""
from __future__ import annotations

import sys

from video_adapt.config_grid import CONFIGS, write_grid
from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    written = write_grid()
    print(f"wrote {len(written)} configs under {CONFIGS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
