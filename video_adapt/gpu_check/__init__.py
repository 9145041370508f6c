"""One command that proves the GPU path: every tuning method in bf16 and fp16, nvJPEG decoding through
`video-adapt train`, DDP over NCCL, the flash SDPA kernel, `torch.compile`, FSDP, and the benchmark tools, in one run
of about six minutes and writes one markdown and one JSON report.

The same sequence runs on the CPU at tiny sizes (`--quick`, the default without a GPU), which is how CI proves the
logic without a GPU: only the device calls differ. Modules:

- `sizes`: the settings of the quick (CPU) and the full (H100/H200) run, with each check's expected seconds;
- `runner`: checks, their pass / fail / skip results, and the time budget;
- `training`: the method steps, DDP (through torchrun, `ddp_worker`) and FSDP checks;
- `data`: the frame store, nvJPEG batches against the CPU workers, `video-adapt train` runs;
- `kernels`: the SDPA kernel, `torch.compile` and the largest batch;
- `tools`: `tools/bench_model.py`, `tools/bench_data.py` and `tools/bench_e2e.py` as subprocesses;
- `report`: the environment, the goals against the figures, the markdown and JSON files;
- `command`: `python tools/gpu_check.py`.
"""
