"""Methods x frames x seeds: tables and a plot.

`video-adapt compare` as a script; the command lives in video_adapt/cli/compare.py (usage: --help).
"""
import sys

from video_adapt.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
