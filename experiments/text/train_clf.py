"""Train the text classifier in the background: python experiments/text/train_clf.py NAME PRETRAIN_STEPS EPOCHS"""
import sys
import torch

torch.set_num_threads(1)
from cfwidgets.models.text_classifier import TextClassifierConfig, train_text_classifier  # noqa: E402

name, pre, ep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
kw = {}
for a in sys.argv[4:]:
    k, v = a.split("=")
    kw[k] = type(getattr(TextClassifierConfig(), k))(v)
model, metrics = train_text_classifier(f"/work/text_runs/clf/{name}.pt", config=TextClassifierConfig(**kw),
                                       pretrain_steps=pre, finetune_epochs=ep)
print("METRICS", metrics)
model.export(f"/work/text_runs/clf/{name}", meta=metrics)
