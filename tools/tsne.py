"""t-SNE maps and separability of trained runs' features.

`video-adapt tsne` as a script; the command lives in video_adapt/cli/tsne.py (usage: --help).
"""
import sys

from video_adapt.cli.tsne import main

if __name__ == "__main__":
    sys.exit(main())
