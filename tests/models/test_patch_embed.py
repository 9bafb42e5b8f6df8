"""The vision tower's patch embedding as one matmul equals its Conv3d, forward and backward, weights unchanged."""

import torch

from sapo_vl.models.load import load_policy
from sapo_vl.models.vision import patch_embed_as_linear


def test_linear_patch_embedding_equals_the_conv3d_forward_and_gradients(tiny_dir):
    model, _ = load_policy(tiny_dir)
    embed = model.model.visual.patch_embed
    assert vars(embed)["forward"].__func__.__name__ == "_linear_patch_embed"  # load_policy applied it, here only
    assert type(embed).forward.__module__.startswith("transformers.")  # the class keeps its convolution
    proj = embed.proj
    x = torch.randn(40, proj.weight[0].numel(), generator=torch.Generator().manual_seed(0))
    grads = []
    for forward in (embed.forward, type(embed).forward.__get__(embed)):  # the matmul, then the convolution
        proj.weight.grad = proj.bias.grad = None
        out = forward(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), proj.weight.grad.clone(), proj.bias.grad.clone()))
    (linear, g_w, g_b), (conv, c_w, c_b) = grads
    assert linear.shape == conv.shape == (40, model.config.vision_config.hidden_size)
    torch.testing.assert_close(linear, conv, rtol=1e-5, atol=1e-5 * conv.abs().max().item())
    torch.testing.assert_close(g_w, c_w, rtol=1e-5, atol=1e-5 * c_w.abs().max().item())
    torch.testing.assert_close(g_b, c_b)
    assert proj.weight.dim() == 5 and "model.visual.patch_embed.proj.weight" in model.state_dict()


def test_a_convolution_whose_patches_overlap_keeps_its_forward():
    class Visual(torch.nn.Module):
        def __init__(self, stride):
            super().__init__()
            self.patch_embed = torch.nn.Module()
            self.patch_embed.proj = torch.nn.Conv3d(3, 8, kernel_size=(2, 4, 4), stride=stride)

    for stride, applies in (((2, 4, 4), True), ((1, 2, 2), False)):
        model = torch.nn.Module()
        model.visual = Visual(stride)
        assert patch_embed_as_linear(model) is applies
    assert patch_embed_as_linear(torch.nn.Linear(2, 2)) is False  # no vision tower: nothing to do
