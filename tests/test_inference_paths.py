"""The fast inference paths give the plain computation's results: packed/trimmed text features, bf16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchclip
from torchclip.modeling.packing import choose_rows, pack_sequences

CONFIG = torchclip.CLIPConfig(
    text_config=dict(
        vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=498, eos_token_id=499,
    ),
    vision_config=dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=64, patch_size=16
    ),
    projection_dim=32,
)  # fmt: skip


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torchclip.CLIPModel(CONFIG).eval()


def padded_batch(lengths: list[int], end: int = 499, pad: int = 499, width: int = 77):
    """Rows of `start, random tokens..., end` padded to `width`, with the tokenizer's attention mask."""
    generator = torch.Generator().manual_seed(len(lengths))
    ids = torch.full((len(lengths), width), pad)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(1, 490, (length,), generator=generator)
        ids[row, 0], ids[row, length - 1] = 498, end
        mask[row, :length] = 1
    return ids, mask


def plain_text_features(model, ids, mask):
    return model.text_projection(model.text_model(ids, mask).pooler_output)


@pytest.mark.parametrize(
    "lengths",
    [
        [2],  # start + end only
        [77, 3, 40],  # one full-length caption
        [5, 9, 14, 12, 7, 20, 3, 16, 11, 8] * 7,  # a realistic mix, packed several to a row
        list(range(2, 78)),  # every length
    ],
)
def test_packed_text_features_equal_plain(model, lengths):
    ids, mask = padded_batch(lengths)
    with torch.no_grad():
        fast = model.get_text_features(ids, mask)
        plain = plain_text_features(model, ids, mask)
        no_mask = model.get_text_features(ids)  # callers that pass no mask get the same
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(no_mask, plain, atol=1e-5, rtol=0)


def test_packed_text_features_without_a_shared_first_token(model):
    """Rows share their first token's state only when every sequence starts with the same token."""
    ids, mask = padded_batch([5, 9, 14, 12, 7, 20, 3, 16])
    ids[3, 0] = 17  # one sequence without the start token
    only_end_tokens = torch.full((3, 77), 499)  # sequences that are their end token alone
    with torch.no_grad():
        for batch, batch_mask in ((ids, mask), (only_end_tokens, None)):
            torch.testing.assert_close(
                model.get_text_features(batch, batch_mask),
                plain_text_features(model, batch, batch_mask),
                atol=1e-5,
                rtol=0,
            )


def test_padding_inside_a_sequence_falls_back_to_the_plain_path(model):
    ids, mask = padded_batch([10, 12, 6])
    mask[1, 4] = 0  # unusual, but allowed: a masked token before the end token
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_text_features(ids, mask), plain_text_features(model, ids, mask), atol=1e-5, rtol=0
        )


def test_legacy_eos_2_pools_at_argmax_when_packed():
    torch.manual_seed(1)
    config = torchclip.CLIPConfig(
        text_config={**CONFIG.text_config.to_dict(), "eos_token_id": 2}, vision_config=CONFIG.vision_config
    )
    model = torchclip.CLIPModel(config).eval()
    ids, mask = padded_batch([6, 11, 3, 30, 9], pad=0)
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_text_features(ids, mask), plain_text_features(model, ids, mask), atol=1e-5, rtol=0
        )


def test_pack_sequences_fits_capacity_and_keeps_every_index():
    lengths = [77, 40, 38, 20, 20, 20, 3, 1]
    rows = pack_sequences(lengths, 77)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 77 for row in rows)
    assert len(rows) < len(lengths)  # short sequences share rows


@pytest.mark.parametrize("lengths", [[76, 76, 3], [4, 5, 6], [8, 17, 12, 9, 16, 11, 10, 14] * 8])
def test_chosen_rows_keep_every_sequence_within_the_model_width(lengths):
    for shared in (0, 1):
        rows = choose_rows(lengths, shared, 77)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(shared + sum(lengths[i] for i in row) <= 77 for row in rows)
    mix = [8, 17, 12, 9, 16, 11, 10, 14] * 8
    assert len(choose_rows(mix, 1, 77)) < len(mix) / 2  # short captions share rows


def test_bf16_embeddings_agree_with_fp32(model, tmp_path):
    model.save_pretrained(tmp_path)
    bf16 = torchclip.CLIPModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    ids, mask = padded_batch([5, 9, 14, 12, 7, 20, 3, 16])
    pixels = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text32, text16 = model.get_text_features(ids, mask), bf16.get_text_features(ids, mask)
        image32, image16 = model.get_image_features(pixels), bf16.get_image_features(pixels.bfloat16())
    assert text16.dtype == image16.dtype == torch.bfloat16
    assert F.cosine_similarity(text32, text16.float()).min() >= 0.999
    assert F.cosine_similarity(image32, image16.float()).min() >= 0.999


def test_autocast_on_fp32_weights_agrees_with_fp32(model):
    pixels = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ids, mask = padded_batch([5, 9, 14, 12])
    with torch.no_grad():
        image32, text32 = model.get_image_features(pixels), model.get_text_features(ids, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            image16, text16 = model.get_image_features(pixels), model.get_text_features(ids, mask)
    assert image16.dtype == torch.bfloat16  # the matrix multiplies really ran in bf16
    assert F.cosine_similarity(image32, image16.float()).min() >= 0.999
    assert F.cosine_similarity(text32, text16.float()).min() >= 0.999
