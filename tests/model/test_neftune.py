import torch

from vlmkit.model.neftune import neftune, sample_lengths


def test_neftune_noise_is_uniform_with_scale_alpha_over_sqrt_length_times_width():
    embeds = torch.zeros(2, 50, 16)
    mask = torch.ones(2, 50, dtype=torch.long)
    mask[1, :34] = 0  # second sample: 16 real tokens
    torch.manual_seed(0)
    noise = neftune(embeds, mask.sum(-1, keepdim=True).expand_as(mask), alpha=5.0)
    bound = 5.0 / torch.sqrt(torch.tensor([50.0 * 16, 16.0 * 16]))
    peak = noise.abs().amax(dim=(1, 2))
    assert torch.all(peak <= bound) and torch.all(peak > 0.95 * bound)
    # packed rows: each token is scaled by its own sample's length
    segments = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1]])
    assert sample_lengths(None, segments)[0].tolist() == [4] * 4 + [12] * 12 + [2] * 2
