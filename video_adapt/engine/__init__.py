"""Fine-tuning and evaluation, one module per job:

- `loop`: `train(cfg)` (a whole run, top to bottom) and `train_one_epoch(run, epoch)`;
- `builders`: model, optimizer, LR schedule and loss (mixup) from a `Config`;
- `data`: store metadata, datasets, samplers, loaders; clips to normalised model input;
- `evaluation`: multi-view `evaluate` (per epoch and after training), `EvalResult`;
- `runs`: `load_run` and `evaluate_run`, the multi-view test of a trained run;
- `optim`, `precision`, `seeding`, `state`: the update step, AMP, RNG and checkpoints that fine-tuning shares with
  VideoMAE pretraining (video_adapt.pretraining);
- `runlog`: metrics.csv and TensorBoard.
"""
from video_adapt.engine.evaluation import EvalResult, evaluate
from video_adapt.engine.loop import train, train_one_epoch
from video_adapt.engine.runs import RunEvaluation, evaluate_run, load_run
from video_adapt.errors import TrainingError

__all__ = ["EvalResult", "RunEvaluation", "TrainingError", "evaluate", "evaluate_run", "load_run", "train",
           "train_one_epoch"]
