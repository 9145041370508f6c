"""One command that proves the GPU path (issue 18): every tuning method in bf16 and fp16, nvJPEG decoding through
`tools/train.py`, DDP over NCCL, the flash SDPA kernel, `torch.compile`, FSDP, and the benchmark tools, in one run
that fits a short GPU lease and writes one markdown and one JSON report.

The same sequence runs on the CPU at tiny sizes (`--quick`, the default without a GPU), which is how CI proves the
logic before a GPU is lent: only the device calls differ. Modules:

- `sizes`: the settings of the quick (CPU) and the full (H100/H200) run, with each check's expected seconds;
- `runner`: checks, their pass / fail / skip results, and the time budget;
- `training`: the method steps, DDP (through torchrun, `ddp_worker`) and FSDP checks;
- `data`: the frame store, nvJPEG batches against the CPU workers, `tools/train.py` runs;
- `kernels`: the SDPA kernel, `torch.compile` and the largest batch;
- `tools`: `tools/bench_model.py`, `tools/bench_data.py` and `tools/bench_e2e.py` as subprocesses;
- `report`: the environment, the issue's goals against the figures, the markdown and JSON files;
- `command`: `python tools/gpu_check.py`.
"""
