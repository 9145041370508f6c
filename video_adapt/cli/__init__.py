"""The `video-adapt` command (also `python -m video_adapt`): one entry point, one subcommand per job.

    video-adapt train --config ssv2/adaptformer_8f model.pretrained=videomae_b.pth
    video-adapt prep ssv2 --videos ... --labels ... --out data/ssv2
    video-adapt <command> --help

Each subcommand is a module of this package (data_prep.<name> for `prep <name>`, also `python -m data_prep.<name>`)
with `main(argv) -> exit code`, a shell over the library. Only the chosen module is imported, and it imports the
library after parsing its arguments, so `--help` answers without loading torch.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("video_adapt.cli.train", "fine-tune a model on a frame store or video files (AdaptFormer, VPT, LoRA, ...)"),
    "test": ("video_adapt.cli.test", "multi-view test of a trained run, with reports"),
    "infer": ("video_adapt.cli.infer", "classify your own video files"),
    "features": ("video_adapt.cli.features", "window features of video files for localization and other tools"),
    "export": ("video_adapt.cli.export", "ONNX / OpenVINO / torch.export / Hugging Face files of a trained model"),
    "compare": ("video_adapt.cli.compare", "methods x frames x seeds: tables and a plot"),
    "ablate": ("video_adapt.cli.ablate", "the article's trade-off and ablation studies"),
    "tsne": ("video_adapt.cli.tsne", "t-SNE maps and separability of trained runs' features"),
    "pretrain": ("video_adapt.cli.pretrain", "VideoMAE masked-autoencoder pretraining"),
    "demo": ("video_adapt.cli.demo", "the embedded benchmark, end to end"),
    "transfer": ("video_adapt.cli.transfer", "a backbone against a random frozen one on unseen task families"),
    "params": ("video_adapt.cli.params", "parameter counts per tuning method"),
    "configs": ("video_adapt.cli.configs", "list the shipped configs, or print one"),
    "app": ("video_adapt.cli.app", "a web page for trying a trained model"),
    "prep": (None, "prepare a dataset: prep {ssv2,hmdb51,folder,synthetic,check,merge} ..."),
}
PREP = {
    "ssv2": "Something-Something v2 as distributed",
    "hmdb51": "HMDB51 with its official split files",
    "folder": "your own videos: class folders or a list file",
    "synthetic": "generate the synthetic benchmark videos",
    "check": "validate a prepared store",
    "merge": "join the parts of a sharded preparation",
}


def _usage(commands: dict, prog: str) -> str:
    width = max(map(len, commands))
    rows = [f"  {name:<{width}}  {value[1] if isinstance(value, tuple) else value}" for name, value in commands.items()]
    return f"usage: {prog} <command> [options]   ({prog} <command> --help)\n\ncommands:\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = "video-adapt"
    if argv and argv[0] == "prep":
        prog, table, argv = "video-adapt prep", PREP, argv[1:]
        modules = {name: f"data_prep.{name}" for name in PREP}
    else:
        table = COMMANDS
        modules = {name: module for name, (module, _) in COMMANDS.items()}
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(table, prog))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in modules:
        print(f"error: unknown command {name!r}; one of: {', '.join(table)}", file=sys.stderr)
        return 2
    sys.argv[0] = f"{prog} {name}"  # argparse of the subcommand names itself after this
    return importlib.import_module(modules[name]).main(rest)
