"""Evaluate a generator checkpoint: python experiments/text/eval_gen.py CKPT.pt CLF_PREFIX [N] [LM_PREFIX]

Prints the quality gates on the first N Rotten Tomatoes test sentences (greedy decodes):
teacher-forced token accuracy (masked / unmasked source), exact match, BLEU, attribute
control rate (flipped sentiment code judged by the classifier), and with an LM the
perplexity of sources, reconstructions and flipped decodes.
"""
import json
import sys
import time

import torch

torch.set_num_threads(1)
from cfwidgets.data.text import load_reviews  # noqa: E402
from cfwidgets.models.text_classifier import TextClassifier  # noqa: E402
from cfwidgets.models.text_generator import TextGenerator, TextGeneratorConfig  # noqa: E402
from cfwidgets.zoo.text_generator_train import evaluate_text_generator  # noqa: E402

ck = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
gen = TextGenerator(TextGeneratorConfig(**ck["config"]))
gen.load_state_dict(ck["model"])
gen.eval()
clf = TextClassifier.load(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 400
te = load_reviews("test")
t = time.time()
ev = evaluate_text_generator(gen, te.texts[:n], te.labels[:n], clf, return_texts=True)
ev["seconds"] = time.time() - t
ev["step"] = ck["state"]["step"]
ev["train_elapsed_s"] = ck["state"]["elapsed"]
if len(sys.argv) > 4:
    from cfwidgets.models.text_lm import TextLM

    lm = TextLM.load(sys.argv[4])
    for key in ("sources", "recons", "flips"):
        ppl = lm.perplexity([t or "." for t in ev[key]])
        ev[f"ppl_{key}_median"] = float(ppl.median())
    ratio = (lm.perplexity([t or "." for t in ev["flips"]]) /
             lm.perplexity(ev["sources"]))
    ev["ppl_ratio_flip_to_source_median"] = float(ratio.median())
for key in ("sources", "recons", "flips"):
    ev.pop(key, None)
print(json.dumps({k: v for k, v in ev.items() if k != "examples"}, indent=1))
for e in ev["examples"]:
    print("src :", e["source"]); print("rec :", e["recon"]); print("flip:", e["flipped"]); print()
