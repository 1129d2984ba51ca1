"""Answering: ``BrainMRIClassifier``, CAMs, the MRI and out-of-distribution checks, whole scans, the app's page
pieces, reports, batches and the gallery. Never imports training or evaluation (``pyproject.toml``'s contracts)."""
