"""Localisation metrics: the pointing game, energy in the box and the head, and evaluate's table."""
import numpy as np
import pytest

from brain_mri.evaluation.localise import box_energy_ratio, head_energy_share, load_boxes, pointing_hit, summarise

BOX = (100.0, 80.0, 140.0, 120.0, 224.0, 224.0)  # x0, y0, x1, y1 in a 224 x 224 image


def _peak_at(x, y, size=224):
    heatmap = np.zeros((size, size), np.float32)
    heatmap[y, x] = 1.0
    return heatmap


def test_pointing_game_allows_15_px_of_the_224_px_image():
    assert pointing_hit(_peak_at(120, 100), BOX)
    assert pointing_hit(_peak_at(154, 100), BOX)  # 14.5 px right of the box
    assert not pointing_hit(_peak_at(156, 100), BOX)  # 16.5 px
    assert pointing_hit(_peak_at(150, 130), BOX)  # 10.5 px right and below: 14.8 px away
    assert not pointing_hit(_peak_at(152, 132), BOX)  # 12.5 and 12.5: 17.7 px
    # the same geometry on a 448-px heatmap: the tolerance stays 15 px of the box's 224-px image
    assert pointing_hit(_peak_at(2 * 154, 200, 448), BOX) and not pointing_hit(_peak_at(2 * 156, 200, 448), BOX)


def test_box_energy_ratio():
    flat = np.ones((224, 224), np.float32)
    assert box_energy_ratio(flat, BOX) == pytest.approx(1.0, rel=0.01)
    inside = np.zeros((224, 224), np.float32)
    inside[80:120, 100:140] = 1
    assert box_energy_ratio(inside, BOX) == pytest.approx(224 * 224 / (40 * 40), rel=0.01)
    assert np.isnan(box_energy_ratio(np.zeros((224, 224), np.float32), BOX))


def test_head_energy_share():
    image = np.zeros((50, 50, 3), np.uint8)
    image[10:40, 10:40] = 200
    image[20:30, 20:30] = 0  # a dark ventricle inside the head still counts as head
    heatmap = np.zeros((50, 50), np.float32)
    heatmap[25, 25] = heatmap[0, 0] = 1.0
    assert head_energy_share(heatmap, image) == pytest.approx(0.5)


def test_summary_per_class():
    rows = [{"label": "glioma", "hit": True, "box_ratio": 4.0}, {"label": "glioma", "hit": False, "box_ratio": 2.0},
            {"label": "notumor", "head_share": 0.8}, {"label": "notumor", "head_share": 0.6}]
    s = summarise(rows)
    assert s["glioma"] == {"images": 2, "boxed": 2, "pointing": 0.5, "box_ratio": 3.0, "head_share": None,
                           "head_area": None}
    assert s["notumor"]["head_share"] == pytest.approx(0.7) and s["notumor"]["pointing"] is None
    assert s["all boxed"]["boxed"] == 2


def test_boxes_load_from_the_dataset_folder(tiny_data, tmp_path):
    root, _ = tiny_data
    boxes = load_boxes(root)
    assert len(boxes) == 3 * (10 + 3) and all(k.split("/")[0] in ("Training", "Testing") for k in boxes)
    assert load_boxes(tmp_path) == {}


def test_evaluate_reports_localisation_on_the_testing_boxes(evaluated):
    stdout, result = evaluated
    loc = result["localisation"]
    assert set(loc) == {"gradcam", "gradcam++", "xgradcam", "layercam", "eigencam"}
    for table in loc.values():
        assert table["all boxed"]["boxed"] == 9  # the three tumour classes' Testing images
        assert table["notumor"]["images"] == 3 and table["notumor"]["boxed"] == 0
        assert table["notumor"]["head_share"] is None or 0 <= table["notumor"]["head_share"] <= 1  # None: empty maps
        assert 0 <= table["all boxed"]["pointing"] <= 1
    assert "| Grad-CAM | all boxed | 9 |" in stdout


def test_cam_grid_gives_each_boxed_class_an_even_share():
    from brain_mri.evaluation.evaluate import grid_picks

    names = [f"glioma/g{i}.jpg" for i in range(10)] + [f"meningioma/m{i}.jpg" for i in range(3)] + ["notumor/n.jpg"]
    labels = [0] * 10 + [1] * 3 + [2]
    boxes = {f"Testing/{n}": (0, 0, 1, 1, 224, 224) for n in names if not n.startswith("notumor")}
    picked = grid_picks(names, labels, boxes, "Testing", tiles=4)
    assert [labels[i] for i in picked] == [0, 0, 1, 1]
    assert grid_picks(names, labels, boxes, "Training", tiles=4) == []  # boxes of another folder
