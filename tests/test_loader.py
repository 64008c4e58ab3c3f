"""Batched frame augmentation: RandomResizedCrop boxes as torchvision draws them, crop+resize+flip in one op."""

from __future__ import annotations

import torch

from avbias.train.loader import Augment, crop_resize_flip, random_resized_crop_boxes, visual_inputs


def test_crop_boxes_fit_the_image_and_cover_the_scale_range() -> None:
    boxes = random_resized_crop_boxes(4000, 48, 64, (0.08, 1.0), torch.Generator().manual_seed(0))
    x0, y0, w, h = boxes.unbind(1)
    assert bool(((x0 >= 0) & (y0 >= 0) & (x0 + w <= 64) & (y0 + h <= 48) & (w > 0) & (h > 0)).all())
    area = w * h / (48 * 64)
    assert 0.06 < float(area.min()) < 0.12 and float(area.max()) > 0.9
    ratio = w / h
    assert float(ratio.min()) > 0.7 and float(ratio.max()) < 1.4


def test_crop_resize_flip_is_exact_on_pixel_aligned_boxes() -> None:
    images = torch.arange(2 * 3 * 16 * 16, dtype=torch.float).view(2, 3, 16, 16)
    full = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 16.0, 16.0]])
    out = crop_resize_flip(images, full, torch.tensor([False, True]), 16)
    torch.testing.assert_close(out[0], images[0])                       # whole image, no flip: identity
    torch.testing.assert_close(out[1], images[1].flip(-1))              # mirrored
    box = torch.tensor([[2.0, 4.0, 8.0, 8.0]])                          # an 8x8 crop kept at 8 px: the crop itself
    torch.testing.assert_close(crop_resize_flip(images[:1], box, torch.tensor([False]), 8)[0], images[0, :, 4:12, 2:10])


def test_visual_inputs_normalise_and_augment_only_in_training() -> None:
    frames = torch.randint(0, 256, (4, 3, 24, 24, 3), dtype=torch.uint8)
    centred = visual_inputs(frames, 1, None, Augment())
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (frames[:, 1].permute(0, 3, 1, 2).float() / 255 - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    torch.testing.assert_close(centred[:, 0], expected)
    a = visual_inputs(frames, 2, torch.Generator().manual_seed(1), Augment())
    b = visual_inputs(frames, 2, torch.Generator().manual_seed(1), Augment())
    assert a.shape == (4, 2, 3, 24, 24) and torch.equal(a, b) and not torch.allclose(a[:, :1], centred)
