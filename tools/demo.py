"""The embedded benchmark, end to end.

`video-adapt demo` as a script; the command lives in video_adapt/cli/demo.py (usage: --help).
"""
import sys

from video_adapt.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
