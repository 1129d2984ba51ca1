"""The ✔ / ✘ verdict and the one-line caption, as the app, its Gallery tab and ``brain-mri gallery`` say them."""
from brain_mri.serving.captions import caption, verdict

P = {"glioma": 0.9, "meningioma": 0.05, "notumor": 0.03, "pituitary": 0.02}


def test_verdict():
    assert verdict("glioma", "glioma") == " ✔" and verdict("pituitary", "glioma") == " ✘"
    assert verdict(None, "glioma") == "" and verdict("glioma", "glioma", "not an MRI") == ""


def test_caption_names_truth_prediction_and_a_flag():
    assert caption("a.jpg", "glioma", P) == "a.jpg: true Glioma ✔ · predicted Glioma 90.0%"
    assert caption("a.jpg", "notumor", P) == "a.jpg: true No tumour ✘ · predicted Glioma 90.0%"
    assert caption("a.jpg", None, P) == "a.jpg: predicted Glioma 90.0%"
    flagged = caption("photo.png", "glioma", P, warning="not an MRI")
    assert flagged == "⚠️ photo.png: true Glioma · no answer" and "Glioma 90" not in flagged
