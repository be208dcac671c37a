"""Runs in the alibi venv (benchmarks/peers/setup.sh): alibi's ``Counterfactual`` (Wachter
et al.) and ``CounterfactualProto`` (Van Looveren & Klaise) on the digits of ``IN.npz``,
one image at a time as the library works, with the settings of alibi's own MNIST examples.
alibi needs TensorFlow, so the zoo's mnist/cnn is ported to Keras from the exported
weights (same layers, channels-last; the logits are checked against PyTorch's).

    python run_alibi.py IN.npz OUT.npz [--methods cf,proto]
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def keras_cnn(w: dict, norm, softmax: bool):
    L = tf.keras.layers
    bn = {"epsilon": 1e-5, "momentum": 0.9}
    inp = L.Input((28, 28, 1))
    h = L.Rescaling(1.0 / float(norm[1]), offset=-float(norm[0]) / float(norm[1]))(inp)
    h = L.Conv2D(32, 3, padding="same", use_bias=False)(h)
    h = L.MaxPool2D(2)(L.ReLU()(L.BatchNormalization(**bn)(h)))
    h = L.Conv2D(64, 3, padding="same", use_bias=False)(h)
    h = L.MaxPool2D(2)(L.ReLU()(L.BatchNormalization(**bn)(h)))
    h = L.Flatten()(L.Permute((3, 1, 2))(h))  # channels first, so the flatten order is torch's
    h = L.ReLU()(L.BatchNormalization(**bn)(L.Dense(128)(h)))
    out = L.Dense(10)(h)
    if softmax:  # alibi's explainers take class probabilities
        out = L.Softmax()(out)
    m = tf.keras.Model(inp, out)
    convs = [l for l in m.layers if isinstance(l, L.Conv2D)]
    bns = [l for l in m.layers if isinstance(l, L.BatchNormalization)]
    dense = [l for l in m.layers if isinstance(l, L.Dense)]
    convs[0].set_weights([w["trunk.0.weight"].transpose(2, 3, 1, 0)])
    convs[1].set_weights([w["trunk.4.weight"].transpose(2, 3, 1, 0)])
    for layer, name in zip(bns, ("trunk.1", "trunk.5", "head.2"), strict=True):
        layer.set_weights([w[f"{name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")])
    dense[0].set_weights([w["head.1.weight"].T, w["head.1.bias"]])
    dense[1].set_weights([w["out.weight"].T, w["out.bias"]])
    return m


def main(inp: str, out: str, methods: str = "cf,proto") -> None:
    d = np.load(inp)
    w = {k[2:]: d[k] for k in d.files if k.startswith("w:")}
    x = d["x"].astype(np.float32).transpose(0, 2, 3, 1)  # NHWC
    target = d["target"].astype(int)
    logits = keras_cnn(w, d["norm"], softmax=False)(x, training=False).numpy()
    logit_gap = float(np.abs(logits - d["logits"]).max())
    tf.compat.v1.disable_eager_execution()  # alibi's counterfactuals build TF1 graphs
    from alibi.explainers import Counterfactual, CounterfactualProto

    model = keras_cnn(w, d["norm"], softmax=True)
    shape = (1, 28, 28, 1)
    res = {"logit_gap": logit_gap}
    if "cf" in methods:
        x_cf, secs = np.full_like(x, np.nan), np.zeros(len(x))
        explainers = {}
        for i in range(len(x)):
            t = int(target[i])
            if t not in explainers:  # alibi fixes the target class when it builds the graph
                explainers[t] = Counterfactual(model, shape=shape, target_proba=1.0, tol=0.01,
                                               target_class=t, max_iter=1000, lam_init=1e-1,
                                               max_lam_steps=10, learning_rate_init=0.1,
                                               feature_range=(0.0, 1.0))
            t0 = time.perf_counter()
            e = explainers[t].explain(x[i:i + 1])
            secs[i] = time.perf_counter() - t0
            if e.cf is not None:
                x_cf[i] = e.cf["X"][0]
        res["cf_x_cf"], res["cf_seconds"] = x_cf.transpose(0, 3, 1, 2), secs
    if "proto" in methods:
        # alibi's MNIST example trains an autoencoder and builds prototypes in its latent
        # space; with no autoencoder ported, the "encoder" here is a flatten (prototypes
        # in pixel space: the mean of the target class's nearest training digits)
        enc = tf.keras.Sequential([tf.keras.layers.Input((28, 28, 1)), tf.keras.layers.Flatten()])
        proto = CounterfactualProto(model, shape, enc_model=enc, theta=10.0, max_iterations=500,
                                    feature_range=(0.0, 1.0), c_init=1.0, c_steps=2)
        t0 = time.perf_counter()
        proto.fit(d["train_x"].astype(np.float32).transpose(0, 2, 3, 1))
        res["proto_fit_seconds"] = time.perf_counter() - t0
        x_cf, secs = np.full_like(x, np.nan), np.zeros(len(x))
        for i in range(len(x)):
            t0 = time.perf_counter()
            e = proto.explain(x[i:i + 1], target_class=[int(target[i])], verbose=False)
            secs[i] = time.perf_counter() - t0
            if e.cf is not None:
                x_cf[i] = e.cf["X"][0]
        res["proto_x_cf"], res["proto_seconds"] = x_cf.transpose(0, 3, 1, 2), secs
    np.savez(out, **res)


if __name__ == "__main__":
    a = sys.argv[1:]
    methods = a[a.index("--methods") + 1] if "--methods" in a else "cf,proto"
    main(a[0], a[1], methods)
