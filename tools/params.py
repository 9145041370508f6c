"""Parameter counts per tuning method.

`video-adapt params` as a script; the command lives in video_adapt/cli/params.py (usage: --help).
"""
import sys

from video_adapt.cli.params import main

if __name__ == "__main__":
    sys.exit(main())
