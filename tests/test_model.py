"""The networks: shapes for any image side, attention cost, label conditioning, size, level noise."""

from __future__ import annotations

import pytest
import torch

from scmaskgan.errors import InputError
from scmaskgan.method.model import (
    Discriminator,
    Generator,
    ModelConfig,
    SelfAttention,
    SpectralLinear,
    count_parameters,
    expected_rate,
    observe,
)


@pytest.mark.parametrize("inpaint", [False, True])
def test_no_convolution_runs_at_full_resolution(inpaint: bool):
    """Convolutions with a few channels over the N x N map were most of a CPU training step
    (docs/method.md, "Speed and memory"); the generator computes at most at half the working
    side, the discriminator at a quarter."""
    cfg = ModelConfig(side=28, n_labels=3, latent_dim=28, base_channels=8, inpaint=inpaint)
    gen, disc = Generator(cfg), Discriminator(cfg)
    sides: dict[str, list[int]] = {"gen": [], "disc": []}
    hooks = [m.register_forward_hook(lambda _m, _args, out, name=name: sides[name].append(out.shape[-1]))
             for name, net in (("gen", gen), ("disc", disc)) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    onehot = torch.eye(3)[[0, 1, 2, 0]]
    cond = (torch.rand(4, 28, 28), torch.ones(4, 28, 28)) if inpaint else None
    level, _ = gen(torch.randn(4, 28), onehot, cond)
    disc.set_genes(700)
    disc(level, torch.ones_like(level), onehot)
    for hook in hooks:
        hook.remove()
    assert sides["gen"] and max(sides["gen"]) <= cfg.work_side // 2
    assert sides["disc"] and max(sides["disc"]) <= cfg.work_side // 4


@pytest.mark.parametrize("side", [5, 13, 28, 30])
@pytest.mark.parametrize("inpaint", [False, True])
def test_shapes_for_any_side(side: int, inpaint: bool):
    torch.manual_seed(0)
    cfg = ModelConfig(side=side, n_labels=3, latent_dim=side, base_channels=8, inpaint=inpaint)
    gen, disc = Generator(cfg), Discriminator(cfg)
    z, onehot = torch.randn(4, side), torch.eye(3)[[0, 1, 2, 0]]
    cond = (torch.rand(4, side, side), torch.ones(4, side, side)) if inpaint else None
    level, logits = gen(z, onehot, cond)
    assert level.shape == logits.shape == (4, side, side)
    assert float(level.detach().min()) >= 0.0 and float(level.detach().max()) <= 1.0
    disc.set_genes(side * side - 1)
    assert disc(level, torch.ones_like(level), onehot).shape == (4,)


def test_inpainting_generator_requires_its_condition():
    cfg = ModelConfig(side=6, n_labels=2, latent_dim=6, base_channels=8)
    with pytest.raises(ValueError, match="not conditioned"):
        Generator(cfg)(torch.randn(2, 6), torch.eye(2), (torch.rand(2, 6, 6), torch.ones(2, 6, 6)))
    inpaint = ModelConfig(side=6, n_labels=2, latent_dim=6, base_channels=8, inpaint=True)
    with pytest.raises(ValueError, match="needs the masked cells"):
        Generator(inpaint)(torch.randn(2, 6), torch.eye(2))


def test_discriminator_pools_only_patches_that_hold_genes():
    cfg = ModelConfig(side=10, n_labels=2, latent_dim=10, base_channels=8)
    disc = Discriminator(cfg)
    disc.set_genes(41)  # genes fill rows 0-3 and one pixel of row 4 (of a 12 x 12 working side)
    weights = disc.patches
    assert weights.shape == (3, 3)  # one patch per 4 x 4 pixels
    assert weights[0].tolist() == [1, 1, 1]
    assert weights[1].tolist() == [1, 0, 0]
    assert float(weights[2].sum()) == 0


def test_discriminator_sees_the_whole_cell_each_cell_on_its_own():
    """One distant gene pixel changes a cell's logit; the rest of the batch does not."""
    torch.manual_seed(0)
    cfg = ModelConfig(side=8, n_labels=2, latent_dim=8, base_channels=8)
    disc = Discriminator(cfg).eval()
    onehot = torch.eye(2)[[0, 1, 0, 1]]
    values = torch.rand(4, 8, 8) * 0.5
    base = disc(values, (values > 0).float(), onehot)
    moved = values.clone()
    moved[:, 7, 7] += 0.5
    assert not torch.allclose(base, disc(moved, (moved > 0).float(), onehot))
    alone = disc(values[:1], (values[:1] > 0).float(), onehot[:1])
    assert torch.allclose(alone, base[:1], atol=1e-6)


def test_attention_starts_as_identity_and_pools_large_maps():
    torch.manual_seed(0)
    attn = SelfAttention(channels=8, max_side=8)
    h = torch.randn(2, 8, 64, 64)
    assert torch.equal(attn(h), h)  # gamma starts at 0: a pure residual
    with torch.no_grad():
        attn.gamma.fill_(1.0)
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda mod, inp, out: seen.append(out.shape) if mod is attn.key else None
    )
    try:
        out = attn(h)
    finally:
        handle.remove()
    assert out.shape == h.shape and not torch.equal(out, h)
    assert seen[0][-2:] == (8, 8)  # keys on the pooled 8 x 8 map: attention is 64 x 64, not 4096 x 4096


def test_label_changes_the_generated_cell():
    torch.manual_seed(0)
    cfg = ModelConfig(side=12, n_labels=3, latent_dim=12, base_channels=8)
    gen = Generator(cfg)
    with torch.no_grad():  # move the label embedding away from its initial scale so it matters
        gen.label_map.embed.weight.mul_(10)
    gen.eval()
    z = torch.randn(1, 12).repeat(3, 1)
    level, _ = gen(z, torch.eye(3))
    assert not torch.allclose(level[0], level[1])


def test_parameter_count_at_n128_stays_in_the_low_millions():
    """16,384 genes: the whole-cell paths grow with the genes (rank x genes, genes x hidden), the rest does not."""
    cfg = ModelConfig(side=128, n_labels=12, latent_dim=128)
    total = count_parameters(Generator(cfg)) + count_parameters(Discriminator(cfg))
    whole_cell = 2 * 128 * 128 * cfg.global_rank + 128 * 128 * cfg.global_hidden
    assert whole_cell < total < whole_cell + 6e6 < 13e6
    inpaint = ModelConfig(side=128, n_labels=12, latent_dim=128, inpaint=True)
    assert count_parameters(Generator(inpaint)) + count_parameters(Discriminator(inpaint)) < 15e6


def test_config_round_trip_and_bad_values():
    cfg = ModelConfig(side=9, n_labels=2, latent_dim=4, inpaint=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.base_side, cfg.work_side, cfg.code_dim) == (3, 12, 2)
    with pytest.raises(InputError, match=r"^model config has unknown key\(s\) depth \(a model file"):
        ModelConfig.from_dict({**cfg.to_dict(), "depth": 3})
    with pytest.raises(InputError, match=r"^model config lacks factor_rank \("):  # a file of another format would
        ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "factor_rank"})
    with pytest.raises(InputError):
        ModelConfig(side=0, n_labels=2, latent_dim=4)


def test_level_noise_is_the_labels_spread_and_not_trained():
    generator = Generator(ModelConfig(side=4, n_labels=2, latent_dim=3))
    spread = torch.stack([torch.full((4, 4), 0.2), torch.full((4, 4), 0.7)])
    generator.init_label_bias(torch.full((2, 4, 4), 0.4), torch.full((2, 4, 4), 0.5), spread)
    onehot = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert torch.allclose(generator.level_spread(onehot), spread.flip(0))
    assert all(p is not generator.log_spread for p in generator.parameters())  # a buffer: the optimiser never sees it


def test_observe_draws_independent_noise_around_the_level():
    level, spread = torch.full((2000, 2, 2), 0.3), torch.full((2000, 2, 2), 0.5)
    normal = torch.randn(2000, 2, 2, generator=torch.Generator().manual_seed(0))
    values = observe(level, spread, normal)
    logits = torch.logit(values).flatten(1)
    assert logits.mean().item() == pytest.approx(torch.logit(torch.tensor(0.3)).item(), abs=0.03)
    assert logits.std(0).mean().item() == pytest.approx(0.5, abs=0.03)
    assert abs(torch.corrcoef(logits.T)[0, 1].item()) < 0.1  # entries do not move together
    assert torch.equal(observe(level, torch.zeros_like(spread), normal), level)


def test_expected_rate_is_the_mean_normalised_expression_of_sampled_cells():
    level, prob, spread, scale = torch.tensor([[0.3, 0.6]]), torch.tensor([[0.4, 0.9]]), torch.tensor([[0.8, 0.3]]), 5.0
    assert torch.allclose(expected_rate(level, prob, torch.zeros_like(spread), scale), prob * torch.expm1(scale * level))
    gen = torch.Generator().manual_seed(1)
    normal = torch.randn(200_000, 1, 2, generator=gen)
    detected = (torch.rand(200_000, 1, 2, generator=gen) < prob).float()
    sampled = torch.expm1(scale * observe(level.expand(200_000, 1, 2), spread.expand(200_000, 1, 2), normal)) * detected
    assert torch.allclose(expected_rate(level, prob, spread, scale), sampled.mean(0), rtol=0.02)


def test_batches_of_large_images_hold_the_pixels_of_a_64_side_batch():
    from scmaskgan.core.config import TrainParams
    from scmaskgan.method.model import pixel_scaled
    from scmaskgan.method.train import batch_sizes

    assert pixel_scaled(64, 45) == 64 and pixel_scaled(64, 64) == 64  # up to 64 x 64: as given
    assert pixel_scaled(64, 128) == 16 and pixel_scaled(64, 184) == 8  # (64/N)^2, floor 8
    assert pixel_scaled(4, 184) == 4  # never above the request
    assert batch_sizes(TrainParams(), 184) == (8, 248)  # 33,514 genes: same 31 steps per epoch
    assert batch_sizes(TrainParams(cells_per_epoch=None), 184) == (8, None)


def test_spectral_linear_matches_torchs_spectral_norm_in_output_and_gradients():
    """The output-side division by sigma is the same layer as ``spectral_norm(nn.Linear)``:
    same logits, same gradients for the weight, bias and input (also through the R1
    double backward pass), the same power iteration of u and v, and no iteration in eval mode."""
    from torch.nn.utils.parametrizations import spectral_norm

    torch.manual_seed(0)
    reference = spectral_norm(torch.nn.Linear(30, 7))
    ours = SpectralLinear(30, 7)
    with torch.no_grad():
        ours.weight.copy_(reference.parametrizations.weight.original)
        ours.bias.copy_(reference.bias)
        ours.u.copy_(reference.parametrizations.weight[0]._u)
        ours.v.copy_(reference.parametrizations.weight[0]._v)
    for train in (True, True, False):
        reference.train(train)
        ours.train(train)
        x_ref = torch.randn(5, 30, requires_grad=True)
        x_ours = x_ref.detach().clone().requires_grad_(True)
        y_ref, y_ours = reference(x_ref), ours(x_ours)
        torch.testing.assert_close(y_ours, y_ref, rtol=1e-5, atol=1e-6)
        (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x_ref, create_graph=True)
        (g_ours,) = torch.autograd.grad(y_ours.square().sum(), x_ours, create_graph=True)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)
        w_ref = torch.autograd.grad(g_ref.square().sum(), reference.parametrizations.weight.original)[0]
        w_ours = torch.autograd.grad(g_ours.square().sum(), ours.weight)[0]
        torch.testing.assert_close(w_ours, w_ref, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours.u, reference.parametrizations.weight[0]._u)
        torch.testing.assert_close(ours.v, reference.parametrizations.weight[0]._v)
    u_before = ours.u.clone()
    ours.eval()
    ours(torch.randn(2, 30))
    assert torch.equal(ours.u, u_before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CPU autocast leaves torch.mv in float32)")
def test_spectral_linear_keeps_its_estimate_in_float32_under_autocast():
    """Mixed precision (CUDA training) must not turn u and v into float16: validation runs
    the discriminator outside autocast afterwards, with the float32 weight."""
    layer = SpectralLinear(16, 4).cuda()
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        layer(torch.randn(3, 16, device="cuda"))
    assert layer.u.dtype == layer.v.dtype == torch.float32
    layer.eval()
    assert layer(torch.randn(3, 16, device="cuda")).dtype == torch.float32
