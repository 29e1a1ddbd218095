"""The contrastive loss across processes, after OpenCLIP's `ClipLoss`.

Each rank encodes its own B pairs; the features of all ranks are all-gathered *with gradients*
(`torch.distributed.nn.functional.all_gather`, whose backward sums the gradient flowing to each rank's
slice), so every image is contrasted with all N*B texts and the other way round. With DDP averaging the
parameter gradients, N processes with batch B compute exactly the loss and gradients of one process
with batch N*B.

`local_loss=True` (OpenCLIP's option) computes only this rank's B rows of the [N*B, N*B] logits: a B x N*B
block instead of the whole matrix, which saves memory and time at scale; averaged over ranks it is the
same loss, and the gradients are the same.

On the whole matrix (one process, or all ranks' features) the loss is `contrastive_loss`, the one that
`CLIPModel(return_loss=True)` returns; only the local block needs its own labels.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from torchclip.modeling.clip import contrastive_loss


def gather_features(image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' features concatenated in rank order, differentiable with respect to every rank's part."""
    # a torch built without distributed support lacks this module
    from torch.distributed.nn.functional import all_gather  # noqa: PLC0415 - optional dependency (torch.distributed)

    return torch.cat(all_gather(image_features)), torch.cat(all_gather(text_features))


class ClipLoss(nn.Module):
    """Symmetric cross-entropy over image->text and text->image similarities, on L2-normalised features.

    `forward(image_features, text_features, logit_scale)` takes normalised features [B, D] of this rank and
    the temperature already exponentiated (as `CLIPModel` multiplies its logits). Outside
    `torch.distributed` (or with one process) it is the paper's loss, `CLIPModel(return_loss=True)`'s.
    """

    def __init__(self, local_loss: bool = False):
        super().__init__()
        self.local_loss = local_loss

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        image_features, text_features = image_features.float(), text_features.float()
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not distributed:
            return contrastive_loss(logit_scale * image_features @ text_features.t())
        all_images, all_texts = gather_features(image_features, text_features)
        if not self.local_loss:
            return contrastive_loss(logit_scale * all_images @ all_texts.t())
        # this rank's rows: its images against every text, its texts against every image
        logits_per_image = logit_scale * image_features @ all_texts.t()
        logits_per_text = logit_scale * text_features @ all_images.t()
        offset = dist.get_rank() * len(image_features)
        labels = torch.arange(len(image_features), device=image_features.device) + offset
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
