"""Multi-view test of a trained run.

`video-adapt test` as a script; the command lives in video_adapt/cli/test.py (usage: --help).
"""
import sys

from video_adapt.cli.test import main

if __name__ == "__main__":
    sys.exit(main())
