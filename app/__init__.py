"""Attend: sequence-to-sequence learning with Bahdanau attention on Keras 3 / TensorFlow."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the layers use TensorFlow ops directly
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.4.0"
