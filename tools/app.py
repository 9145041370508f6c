"""A web page for trying a trained model.

`video-adapt app` as a script; the command lives in video_adapt/cli/app.py (usage: --help).
"""
import sys

from video_adapt.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
