import math

import pytest
import torch

from vlm.model.config import get_preset
from vlm.model.vision_language_model import VisionLanguageModel
from vlm.training.loop import TrainConfig, build_optimizer
from vlm.training.optim import (
    MuonAdamW,
    gram_newton_schulz,
    muon_matrices,
    orthogonalize,
    orthogonalize_all,
    plain_newton_schulz,
)


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (32, 32)])
def test_orthogonalize_flattens_the_singular_values(shape):
    torch.manual_seed(0)
    matrix = torch.randn(shape) @ torch.diag(torch.logspace(0, 1, shape[1]))  # singular values spread 10x
    singular = torch.linalg.svdvals(orthogonalize(matrix, steps=5, dtype=torch.float32))
    # The quintic iteration lands every singular value in roughly [0.7, 1.2], not exactly on 1.
    assert singular.min() > 0.6 and singular.max() < 1.25


@pytest.mark.parametrize("shape", [(16, 64), (32, 48)])
def test_gram_iteration_gives_the_plain_iterates(shape):
    torch.manual_seed(0)
    matrix = torch.randn(shape[0], 4) @ torch.randn(4, shape[1]) + 0.1 * torch.randn(shape)  # a gradient's low rank
    x = (matrix / matrix.norm()).unsqueeze(0)  # a batch of one
    plain = plain_newton_schulz(x, 5)
    # Float32 rounding, which the two orders of products accumulate differently: 2e-4 of the largest entry here.
    torch.testing.assert_close(gram_newton_schulz(x, 5), plain, atol=1e-3 * plain.abs().max().item(), rtol=0)


def test_matrices_orthogonalized_together_get_what_each_gets_alone():
    torch.manual_seed(0)
    # Two of one shape, one the transpose of that shape (batched with them), and one of its own.
    matrices = [torch.randn(16, 40), torch.randn(40, 16), torch.randn(16, 40), torch.randn(24, 24)]
    together = orthogonalize_all(matrices, steps=5, dtype=torch.float32)
    for matrix, result in zip(matrices, together):
        alone = orthogonalize(matrix, steps=5, dtype=torch.float32)
        assert result.shape == matrix.shape
        torch.testing.assert_close(result, alone, atol=1e-5, rtol=0)


def test_muon_steps_match_torch_muon():
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(24, 40))
    start = ours.detach().clone()
    reference = torch.nn.Parameter(start.clone())
    settings = dict(lr=0.02, weight_decay=0.1)
    optimizer = MuonAdamW([{"params": [ours], "muon": True}], momentum=0.95, **settings)
    # torch.optim.Muon orthogonalizes in bfloat16: the two agree to bf16's precision.
    torch_muon = torch.optim.Muon([reference], momentum=0.95, adjust_lr_fn="match_rms_adamw", **settings)
    for _ in range(3):
        grad = torch.randn(24, 40)
        for param, opt in ((ours, optimizer), (reference, torch_muon)):
            param.grad = grad.clone()
            opt.step()
    moved = (reference - start).abs().max()
    assert moved > 0.03  # several times the tolerance: the comparison is not of two parameters that barely moved
    torch.testing.assert_close(ours, reference, atol=2e-3, rtol=0)


def test_adamw_groups_match_torch_adamw():
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    settings = dict(lr=0.01, betas=(0.9, 0.98), weight_decay=0.05)
    optimizer = MuonAdamW([{"params": ours}], **settings)
    torch_adamw = torch.optim.AdamW(reference, **settings)
    for _ in range(4):
        grads = [torch.randn_like(p) for p in ours]
        for params, opt in ((ours, optimizer), (reference, torch_adamw)):
            for param, grad in zip(params, grads):
                param.grad = grad.clone()
            opt.step()
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b)


def test_muon_steps_a_filter_bank_as_its_flattened_matrix():
    torch.manual_seed(0)
    filters = torch.nn.Parameter(torch.randn(8, 3, 3, 3))
    matrix = torch.nn.Parameter(filters.detach().flatten(1).clone())
    optimizers = [MuonAdamW([{"params": [p], "muon": True}], lr=0.02, weight_decay=0.1) for p in (filters, matrix)]
    for _ in range(2):
        grad = torch.randn(8, 27)
        filters.grad, matrix.grad = grad.view(8, 3, 3, 3).clone(), grad.clone()
        for optimizer in optimizers:
            optimizer.step()
    torch.testing.assert_close(filters.flatten(1), matrix)


def test_muon_group_refuses_other_than_matrices():
    with pytest.raises(ValueError, match="matrices and filters only"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(4))], "muon": True}])


def test_muon_takes_the_linear_matrices_and_adamw_the_rest():
    model = VisionLanguageModel(get_preset("tiny"))
    matrices = muon_matrices(model)
    names = {name for name, p in model.named_parameters() if p in matrices}
    assert "decoder.blocks.0.mlp.up.weight" in names and "projector.mlp.0.weight" in names
    assert "vision_encoder.vit.blocks.0.attn.qkv.weight" in names
    # Looked up, not multiplied (the token table is also the tied output layer); convolutions; 1-D parameters.
    assert not names & {"decoder.token_embedding.weight", "decoder.position_embedding.weight"}
    assert not any("patch_embed" in n or n.endswith(".bias") for n in names)

    with_filters = muon_matrices(model, convolutions=True)
    assert {n for n, p in model.named_parameters() if p in with_filters} - names == {
        "vision_encoder.vit.patch_embed.proj.weight"
    }

    for muon_convolutions, stepped in ((False, matrices), (True, with_filters)):
        config = TrainConfig(lr_decoder=1e-3, muon_lr_ratio=4.0, muon_convolutions=muon_convolutions, weight_decay=0.05)
        optimizer = build_optimizer(model, config)
        grouped = [p for g in optimizer.param_groups for p in g["params"]]
        assert len(grouped) == len(set(grouped)) == len(list(model.parameters()))
        for group in optimizer.param_groups:
            kinds = {(p in stepped, p.dim() < 2) for p in group["params"]}
            assert kinds == {(True, False)} if group["muon"] else kinds in ({(False, False)}, {(False, True)})
            # biases and norms without weight decay, everything else with it
            assert group["weight_decay"] == (0.0 if kinds == {(False, True)} else 0.05)
    decoder_muon = next(
        g for g in optimizer.param_groups if g["muon"] and g["params"][0] in set(model.decoder.parameters())
    )
    assert math.isclose(decoder_muon["lr"], 4e-3)

    adamw_only = build_optimizer(model, TrainConfig(optimizer="adamw"))
    assert not any(g["muon"] for g in adamw_only.param_groups)
    tuned = build_optimizer(model, TrainConfig(betas=(0.8, 0.9), dtype="bfloat16"))
    assert {g["betas"] for g in tuned.param_groups} == {(0.8, 0.9)}
    assert tuned.newton_schulz_dtype == torch.bfloat16  # orthogonalized in the training's dtype
