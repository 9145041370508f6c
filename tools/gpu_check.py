"""One command that proves the GPU path: every tuning method in bf16 and fp16, nvJPEG decoding through
video-adapt train, DDP, the SDPA kernel, torch.compile, FSDP, and the benchmark tools, with one report.

    python tools/gpu_check.py --quick                                  # the CPU at tiny sizes (CI; the CPU default)
    python tools/gpu_check.py --prepare stores/gpu_check               # here, before a GPU run: its store
    python tools/gpu_check.py --store stores/gpu_check/store --out $OUT   # on the GPU (docs/GPU_CHECK.md)

The checks live in video_adapt/gpu_check/ (usage: --help).
"""
import sys

from video_adapt.gpu_check.command import main

if __name__ == "__main__":
    sys.exit(main())
