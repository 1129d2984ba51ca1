"""The answer for a whole scan: every slice's probabilities, the flagged slices, the top slices explained,
and a summary that says plainly that the model judges slices, not patients."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import CLASS_NAMES, DISPLAY_NAMES, OUTSIDE_KAGGLE

NO_TUMOUR = "notumor"
SLICE_LEVEL = ("The model judges each slice on its own: it was trained on single 2-D slices, never on patients or "
               "whole scans. These numbers are no diagnosis of the patient: a tumour can be missed on every slice, "
               "and a healthy scan can have slices called a tumour.")
CAVEATS = [SLICE_LEVEL, OUTSIDE_KAGGLE]
#: A head section below this share of the scan's largest is near the vertex or the skull base: on a healthy
#: skull-on T1 (benchmarks/scan_ends.py) 7 of 18 such answered slices were called a tumour, 0 of 143 others.
END_OF_HEAD = 0.5


@dataclass
class VolumeAssessment:
    """What :meth:`~brain_mri.serving.inference.BrainMRIClassifier.assess_volume` returns.

    Attributes:
        name: the scan's file name; kind: "NIfTI", "DICOM series of N files" or "multi-frame DICOM".
        plane: the plane of the slices (axial, coronal, sagittal).
        slices: per slice, in order: ``probabilities`` (class -> p), ``warning`` (why it is not taken for a
            brain MRI slice, else None) and ``ood_score``.
        top: ``(slice index, Explanation)`` of the slices with the highest tumour probability, highest first.
        reading: how the scan was read (:attr:`~brain_mri.io.volumes.Volume.reading`): its window, its slice order.
        sections: each slice's head section as a share of the largest (:meth:`~brain_mri.io.volumes.Volume.sections`).
    """

    name: str
    kind: str
    plane: str
    slices: list
    top: list = field(default_factory=list)
    reading: list = field(default_factory=list)
    sections: list = field(default_factory=list)

    @property
    def flagged(self) -> list[int]:
        """Slices not taken for a brain MRI slice: they get no answer."""
        return [i for i, s in enumerate(self.slices) if s["warning"]]

    def tumour_probability(self, index: int) -> float:
        """1 - p(no tumour) of one slice."""
        return 1.0 - self.slices[index]["probabilities"][NO_TUMOUR]

    def head_section(self, index: int) -> float | None:
        """A slice's head area as a share of the scan's largest (near 0: an end of the head), None when unmeasured."""
        return float(self.sections[index]) if len(self.sections) else None

    def predicted(self, index: int) -> str | None:
        """A slice's top class, or None when it is flagged."""
        s = self.slices[index]
        return None if s["warning"] else max(s["probabilities"], key=s["probabilities"].get)

    def summary(self) -> str:
        """Plain sentences: what was scored, what was left out, where the tumour probability is highest."""
        n, flagged = len(self.slices), len(self.flagged)
        lines = [f"{n} {self.plane} slice{'s' * (n != 1)} of {self.name} ({self.kind}) scored.", *self.reading]
        if flagged:
            lines.append(f"{flagged} slice{'s were' if flagged != 1 else ' was'} not taken for a brain MRI slice "
                         "(blank, outside the head, unlike the training slices, or not brain MRI by its DICOM header) "
                         "and got no answer.")
        answered = [i for i in range(n) if not self.slices[i]["warning"]]
        if not answered:
            return " ".join(lines + ["No slice was taken for a brain MRI slice, so there is no answer.", *CAVEATS])
        calls = [self.predicted(i) for i in answered]
        tumour = {c: calls.count(c) for c in CLASS_NAMES if c != NO_TUMOUR and calls.count(c)}
        found = ", ".join(f"{DISPLAY_NAMES[c].lower()} {k}" for c, k in tumour.items())
        lines.append(f"Slices called a tumour: {sum(tumour.values())} of {len(answered)} answered"
                     + (f" ({found})." if found else "."))
        best = top_slices(self.slices, 1)[0]
        lines.append(f"Highest tumour probability: slice {best} ({self.tumour_probability(best):.1%}; "
                     f"top class {DISPLAY_NAMES[self.predicted(best)]}).")
        if len(self.sections) and self.sections[best] < END_OF_HEAD:
            lines.append(f"That slice lies near an end of the head (its head section is {self.sections[best]:.0%} of "
                         "the scan's largest): few training slices look like it, so read its answer with care.")
        return " ".join(lines + CAVEATS)

    def to_dict(self) -> dict:
        """JSON-ready: per-slice rows, the flagged and top slices, and the summary."""
        return {
            "file": self.name, "kind": self.kind, "plane": self.plane, "reading": self.reading,
            "summary": self.summary(),
            "slices": [{"index": i, "predicted": self.predicted(i), "probabilities": s["probabilities"],
                        "tumour_probability": self.tumour_probability(i), "flagged": bool(s["warning"]),
                        "ood_score": s["ood_score"], "warning": s["warning"],
                        "head_section": self.head_section(i)}
                       for i, s in enumerate(self.slices)],
            "flagged_slices": self.flagged, "top_slices": [i for i, _ in self.top],
        }


def top_slices(slices: list, count: int) -> list[int]:
    """The ``count`` answered slices with the highest tumour probability, highest first (ties: lower index)."""
    answered = [i for i, s in enumerate(slices) if not s["warning"]]
    return sorted(answered, key=lambda i: (slices[i]["probabilities"][NO_TUMOUR], i))[:count]
