"""Background LM training: python experiments/text/train_lm.py NAME STEPS"""
import json
import sys

import torch

torch.set_num_threads(1)
from cfwidgets.models.text_lm import train_text_lm  # noqa: E402

name, steps = sys.argv[1], int(sys.argv[2])
lm, metrics = train_text_lm(f"/work/text_runs/lm/{name}.pt", steps=steps, eval_every=500)
print("FINAL", json.dumps(metrics))
lm.export(f"/work/text_runs/lm/{name}", meta=metrics)
