"""What the benchmark scripts (tools/bench_*.py) measure with, kept in the library so tests import it:

- `sources`: footage-like source videos at Something-Something v2's bit rate, and own videos from a folder;
- `data_loader`: training-loader clips/s per clip protocol, frame store (JPEG, raw) against the video files;
- `e2e`: training epochs from videos on disk, store (prep amortised) against decoding on the fly;
- `hardware`: the largest batch that fits, known accelerator peaks for MFU, peak RSS, the flash-attention check;
- `model_step`: our ViT and Hugging Face VideoMAE with the same weights, timed step by step.
"""
