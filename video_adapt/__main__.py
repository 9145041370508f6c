"""`python -m video_adapt <command> ...`, the same as the `video-adapt` command."""
import sys

from video_adapt.cli import main

sys.exit(main())
