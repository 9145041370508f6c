"""The article's trade-off and ablation studies.

`video-adapt ablate` as a script; the command lives in video_adapt/cli/ablate.py (usage: --help).
"""
import sys

from video_adapt.cli.ablate import main

if __name__ == "__main__":
    sys.exit(main())
