"""One training epoch: the prepared pieces of a run, a batch's augmentation, forward and loss, the epoch loop."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .checkpoints import crash_point
from ..transforms import mix_batch
from .tumour_present import tumour_present_loss


@dataclass
class Trainer:
    """The prepared pieces of a run that one epoch needs."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    criterion: torch.nn.Module
    normalize: torch.nn.Module
    augment: torch.nn.Module
    ema: object = None  # timm ModelEmaV3: updated each step; validated and exported instead of the model
    mixup: object = None  # from make_mixup; accuracy is then counted against the unmixed labels
    guide: object = None  # a guidance.Guide: class evidence pushed into the tumour box / the head
    tumour: object = None  # a tumour_present.TumourBatches: slices known only to hold a tumour, beside each batch

    def step(self, images, labels, idx, gen, extra=None):
        """Augment, forward and loss of one batch, with ``extra`` slices that hold a tumour of unknown type (one
        forward pass for both): ``(logits of the batch, loss)``."""
        from ..serving.explain import LayerTap
        from .guidance import evidence_outside, guide_masks

        n = len(labels)
        extra = None if extra is None else self.normalize(self.augment(extra.to(images.device), gen))
        if self.guide is None:
            inputs, targets = mix_batch(self.mixup, self.normalize(self.augment(images, gen)), labels)
            logits = self.model(inputs if extra is None else torch.cat([inputs, extra]))
            loss = self.criterion(logits[:n], targets)
        else:
            masks, weights = guide_masks(images, labels, self.guide.boxes[idx.cpu()].to(images.device))
            augmented, masks = self.augment(images, gen, masks)  # the boxes follow every augmentation
            inputs = self.normalize(augmented)
            with LayerTap(self.guide.layer) as tap:
                logits = self.model(inputs if extra is None else torch.cat([inputs, extra]))
            outside = evidence_outside(tap.output[:n], self.guide.head, labels, masks, weights)
            loss = self.criterion(logits[:n], labels) + self.guide.weight * outside
        if extra is not None:
            loss = loss + self.tumour.weight * tumour_present_loss(logits[n:])
        return logits[:n], loss

    def train_epoch(self, loader, epoch: int, total_epochs: int, seed: int) -> tuple[float, float]:
        """One epoch; returns (mean loss, accuracy) over all processes."""
        acc, model = self.accelerator, self.model
        model.train()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch * 10 + acc.process_index)
        loss_sum, correct, seen = (torch.zeros((), device=acc.device) for _ in range(3))
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{total_epochs}", disable=not acc.is_local_main_process,
                   leave=False, dynamic_ncols=True)
        step = epoch * math.ceil(len(loader) / acc.gradient_accumulation_steps)  # optimizer steps so far
        extras = None if self.tumour is None else self.tumour.epoch(epoch, acc.process_index)
        for i, (images, labels, idx) in enumerate(bar):
            crash_point(f"step:{epoch * len(loader) + i}")
            with acc.accumulate(model):
                logits, loss = self.step(images, labels, idx, gen, None if extras is None else next(extras))
                acc.backward(loss)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None and acc.sync_gradients:
                step += 1
                self.ema.update(acc.unwrap_model(model), step=step)
            n = labels.shape[0]
            loss_sum += loss.detach().float() * n
            correct += (logits.argmax(1) == labels).sum()
            seen += n
            bar.set_postfix(loss=f"{loss_sum.item() / seen.item():.3f}", acc=f"{correct.item() / seen.item():.3f}",
                            lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        totals = acc.reduce(torch.stack([loss_sum, correct, seen]), reduction="sum")
        return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()

    @property
    def evaluated(self) -> torch.nn.Module:
        """What is validated, kept and exported: the weight average when there is one."""
        return self.model if self.ema is None else self.ema.module
