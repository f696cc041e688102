"""A trained MLP run as a chain of 1x1 convolutions, in float32 and in int8.

A multilayer perceptron applied to one sample is a chain of 1x1 convolutions on a 1x1
"image": the sample's features are the channels. This example

1. trains scikit-learn's ``MLPClassifier`` (64 -> 128 -> 64 -> 10, relu) on the 8x8
   digits bundled with scikit-learn (no download);
2. exports its weights as ``fastpw.Conv1x1`` layers (weight = coef.T, float32 (K, C))
   and checks that fastpw's float logits match the MLP's own (computed here in float64)
   and that the predicted classes match ``clf.predict``;
3. calibrates ``fastpw.quant.QuantizedSequential`` on the training split (uint8
   activations, int8 weights per output channel, min/max ranges) and runs the test
   split through the int8 chain.

Run it with ``python examples/digits_mlp.py``, or import it and call ``run()``, which
returns the accuracies and SQNRs as a dict (tests/test_quant_digits.py does).
"""

from __future__ import annotations

import io

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

import fastpw
from fastpw.quant import QuantizedSequential, sqnr

#: fastpw's float32 logits against the float64 MLP: max |difference| / max |logit|.
FLOAT_TOLERANCE = 1e-4
#: Samples per calibration batch (the calibration sees the whole training split).
CALIBRATION_BATCH = 128


def as_pixels(features: np.ndarray) -> np.ndarray:
    """(N, 64) features -> float32 (N, 64, 1, 1): each sample is one NCHW pixel."""
    return np.ascontiguousarray(features, dtype=np.float32).reshape(len(features), -1, 1, 1)


def mlp_logits(clf: MLPClassifier, features: np.ndarray) -> np.ndarray:
    """The MLP's pre-softmax output, in float64 numpy from its coefs_ and intercepts_."""
    h = np.asarray(features, dtype=np.float64)
    last = len(clf.coefs_) - 1
    for index, (coef, intercept) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=False)):
        h = h @ coef + intercept
        if index < last:
            h = np.maximum(h, 0.0)
    return h


def export_layers(clf: MLPClassifier) -> list[fastpw.Conv1x1]:
    """One ``fastpw.Conv1x1`` per MLP layer: relu on the hidden ones, none on the last."""
    last = len(clf.coefs_) - 1
    return [
        fastpw.Conv1x1(
            coef.T.astype(np.float32),  # sklearn's coef is (C, K); fastpw wants (K, C)
            intercept.astype(np.float32),
            activation="relu" if index < last else None,
        )
        for index, (coef, intercept) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=False))
    ]


def run_float(layers, x: np.ndarray) -> np.ndarray:
    for layer in layers:
        x = layer(x)
    return x


def run(verbose: bool = True) -> dict:
    """Train, export, check, quantize and evaluate; return the numbers as a dict."""
    features, labels = load_digits(return_X_y=True)
    features = features / 16.0  # pixel values 0..16 -> 0..1, for both float and int8
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, random_state=0, stratify=labels
    )
    clf = MLPClassifier(
        hidden_layer_sizes=(128, 64), activation="relu", random_state=0, max_iter=400
    )
    clf.fit(x_train, y_train)  # converges in about 150 epochs

    # Float: fastpw's chain must reproduce the MLP.
    layers = export_layers(clf)
    test_pixels = as_pixels(x_test)
    float_logits = run_float(layers, test_pixels).reshape(len(x_test), -1)
    reference = mlp_logits(clf, x_test)
    error = np.max(np.abs(float_logits - reference)) / np.max(np.abs(reference))
    if error > FLOAT_TOLERANCE:
        raise AssertionError(f"fastpw float logits differ from the MLP's: relative {error:.2e}")
    float_predictions = float_logits.argmax(axis=1)
    if not np.array_equal(clf.classes_[float_predictions], clf.predict(x_test)):
        raise AssertionError("fastpw's float predictions differ from clf.predict")

    # int8: calibrate on the training split, then run the test split.
    train_pixels = as_pixels(x_train)
    batches = [
        train_pixels[start : start + CALIBRATION_BATCH]
        for start in range(0, len(train_pixels), CALIBRATION_BATCH)
    ]
    net = QuantizedSequential.calibrate(
        layers, batches, x_dtype=np.uint8, per_channel=True, method="minmax"
    )
    int8_logits = net(test_pixels).reshape(len(x_test), -1)
    int8_predictions = int8_logits.argmax(axis=1)

    table = io.StringIO()
    rows = net.report(test_pixels, file=table)
    result = {
        "train_size": len(x_train),
        "test_size": len(x_test),
        "float_accuracy": float(np.mean(clf.classes_[float_predictions] == y_test)),
        "int8_accuracy": float(np.mean(clf.classes_[int8_predictions] == y_test)),
        "logits_sqnr_db": sqnr(float_logits, int8_logits),
        "per_layer_sqnr": [row["sqnr_db"] for row in rows],
        "float_max_relative_error": float(error),
    }
    if verbose:
        print(f"digits: {result['train_size']} training, {result['test_size']} test samples")
        print(f"MLP 64->128->64->10 (relu) as fastpw.Conv1x1 layers, kernels {fastpw.isa()}")
        print(f"float32 vs float64 MLP logits: max relative error {error:.1e}")
        print(f"{net!r}")
        print(f"float32 accuracy: {result['float_accuracy']:.2%}")
        print(f"int8 accuracy:    {result['int8_accuracy']:.2%}")
        print(f"logits SQNR (int8 vs float32): {result['logits_sqnr_db']:.1f} dB")
        print("per layer (int8 output vs float32 output, test split):")
        print(table.getvalue(), end="")
    return result


if __name__ == "__main__":
    run()
