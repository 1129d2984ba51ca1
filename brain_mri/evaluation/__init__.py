"""Measuring a model: a split's logits and metrics, calibration, localisation (pointing game, box energy) and
faithfulness. Serving never imports it."""
