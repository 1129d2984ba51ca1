"""Training: data and its leak audit, MRI augmentation, other sources and their mixing, the tumour-present
head, box guidance, the loop, checkpoints and one whole run. Loads ``datasets``, ``accelerate`` and
scikit-learn; serving never imports it."""
