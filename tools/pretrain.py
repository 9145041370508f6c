"""VideoMAE masked-autoencoder pretraining.

`video-adapt pretrain` as a script; the command lives in video_adapt/cli/pretrain.py (usage: --help).
"""
import sys

from video_adapt.cli.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
