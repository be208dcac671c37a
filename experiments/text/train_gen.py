"""Background runner for generator variants.

python experiments/text/train_gen.py NAME CLASSIFIER_PREFIX key=value ...   (config + train kwargs)
Logs to stdout; checkpoint /work/text_runs/gen/NAME.pt; export /work/text_runs/gen/NAME.{safetensors,json}
"""
import json
import sys
from dataclasses import fields

import torch

torch.set_num_threads(1)
from cfwidgets.models.text_generator import TextGeneratorConfig  # noqa: E402
from cfwidgets.zoo.text_generator_train import train_text_generator  # noqa: E402

name, clf = sys.argv[1], sys.argv[2]
cfg_keys = {f.name: f.type for f in fields(TextGeneratorConfig)}
cfg, kw = {}, {}


def parse(v):
    try:
        return json.loads(v)
    except ValueError:
        return v


for arg in sys.argv[3:]:
    k, v = arg.split("=", 1)
    (cfg if k in cfg_keys else kw)[k] = parse(v)
gen, metrics = train_text_generator(f"/work/text_runs/gen/{name}.pt",
                                    None if clf == "none" else clf,
                                    config=TextGeneratorConfig(**cfg), **kw)
print("FINAL", json.dumps(metrics, default=str))
gen.export(f"/work/text_runs/gen/{name}", meta=metrics)
