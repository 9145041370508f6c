"""Fine-tune a model on a tube store.

`video-adapt train` as a script; the command lives in video_adapt/cli/train.py (usage: --help).
"""
import sys

from video_adapt.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
