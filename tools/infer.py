"""Classify your own video files with a trained model.

`video-adapt infer` as a script; the command lives in video_adapt/cli/infer.py (usage: --help).
"""
import sys

from video_adapt.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
