"""Are the maps faithful to the model? Two checks: ROAD (pytorch-grad-cam) and model randomisation.

- ROAD (Rong et al. 2022): impute away the most / least relevant pixels by the map; a faithful
  map makes the class score fall faster when the most relevant go first. pytorch-grad-cam's
  ``ROADCombined`` gives (LeRF - MoRF) / 2 of the target's softmax: higher is better.
- Model randomisation (Adebayo et al. 2018): a map that barely changes when the last stage's
  weights are re-initialised does not depend on what the model learned.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..serving.explain import compute_cam, target_layer_for


def last_stage(model: torch.nn.Module) -> torch.nn.Module:
    """The stage that holds the CAM layer (ResNet ``layer4``, ConvNeXt ``stages[-1]``, ...)."""
    layer, _ = target_layer_for(model)
    for name in ("layer4", "stages", "blocks", "layers", "s4"):
        stage = getattr(model, name, None)
        if stage is not None:
            return stage[-1] if isinstance(stage, (torch.nn.Sequential, torch.nn.ModuleList)) else stage
    return layer


def randomised_copy(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """A copy of ``model`` whose last stage is re-initialised (Adebayo et al.'s cascading test, one step)."""
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    for m in last_stage(clone).modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return clone.eval()


def randomisation_correlation(model, randomised, batch: torch.Tensor, targets, method: str = "gradcam",
                              target_layer: str | None = None, data_config: dict | None = None) -> list:
    """Spearman rank correlation between the maps of ``model`` and ``randomised``, image by image
    (close to 1: the map ignores the learned weights)."""
    from scipy.stats import spearmanr

    out = []
    for x, t in zip(batch, targets):
        a = compute_cam(model, x[None], method, int(t), target_layer, data_config)[1]
        b = compute_cam(randomised, x[None], method, int(t), target_layer, data_config)[1]
        out.append(float(spearmanr(a.ravel(), b.ravel())[0]) if a.std() > 0 and b.std() > 0 else float("nan"))
    return out


def road_scores(model, batch: torch.Tensor, targets, method: str = "gradcam", target_layer: str | None = None,
                data_config: dict | None = None, percentiles=(20, 40, 60, 80)) -> np.ndarray:
    """ROAD combined score per image (pytorch-grad-cam), for the maps of ``method`` on the target class."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    cams = np.stack([compute_cam(model, x[None], method, int(t), target_layer, data_config)[1]
                     for x, t in zip(batch, targets)])
    with torch.no_grad():
        return np.asarray(ROADCombined(percentiles=list(percentiles))(
            batch, cams, [ClassifierOutputSoftmaxTarget(int(t)) for t in targets], model)).ravel()
