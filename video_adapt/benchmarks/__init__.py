"""What the benchmark scripts (tools/bench_*.py) measure with, kept in the library so tests import it:

- `sources`: footage-like source videos at Something-Something v2's bit rate, and the usual alternative to a
  prepared store (decoding every clip from its source in the DataLoader);
- `hardware`: the largest batch that fits, known accelerator peaks for MFU, peak RSS, the flash-attention check;
- `model_step`: our ViT and Hugging Face VideoMAE with the same weights, timed step by step.
"""
