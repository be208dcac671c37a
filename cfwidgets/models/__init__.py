"""Plain nn.Modules: classifiers, autoencoders and generative models."""

from .autoencoder import ClassAutoencoders, ConvAutoencoder
from .classifiers import ConvNet, DUQConvNet, ExternalDigitCNN, MLPClassifier, load_digit_recognizer

__all__ = ["ClassAutoencoders", "ConvAutoencoder", "ConvNet", "DUQConvNet", "ExternalDigitCNN", "MLPClassifier",
           "load_digit_recognizer"]
