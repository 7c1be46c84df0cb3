"""Encoder registry: names, attributes, test configurations, local weights, run folders, full-size counts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from clearct.common.errors import ClearctError
from clearct.encoders import create_encoder, list_encoders, save_encoder_run
from clearct.encoders.registry import RANDOM_INIT, REQUIRED, lookup

TEST_CONFIGS = ["vit_conv_test", "mambaout_test", "vmamba_test"]


def _inputs(encoder, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, encoder.input_size, encoder.input_size, generator=gen)


def test_registry_lists_every_architecture_and_rejects_unknown_names():
    names = list_encoders()
    for name in ["vit_conv_base", "vit_conv_small", "mambaout_tiny", "mambaout_kobe", "mambaout_femto",
                 "vmamba_tiny", "timm:<name>", "biomedclip", *TEST_CONFIGS]:
        assert name in names
    with pytest.raises(ClearctError, match="unknown encoder 'vit_huge_nope'.*vit_conv_base"):
        create_encoder("vit_huge_nope")
    with pytest.raises(ClearctError, match="timm has no model"):
        create_encoder("timm:no_such_model_xyz")
    with pytest.raises(ClearctError, match="no such encoder run folder"):
        create_encoder("runs/missing")


@pytest.mark.parametrize("name", TEST_CONFIGS)
def test_test_configs_are_small_and_run_forward_and_backward(name):
    torch.manual_seed(0)
    encoder = create_encoder(name)
    for attr in REQUIRED:
        assert hasattr(encoder, attr), attr
    assert encoder.input_size == 64 and encoder.encoder_name == name and encoder.weights_sha256 == RANDOM_INIT
    assert not encoder.is_3d and len(encoder.mean) == 3 and len(encoder.std) == 3
    assert sum(p.numel() for p in encoder.parameters()) < 1_000_000
    encoder.train()
    x = _inputs(encoder, batch=3).requires_grad_(True)
    out = encoder(x)
    assert out.shape == (3, encoder.embed_dim) and torch.isfinite(out).all()
    # The rows are different images, so the features differ (nothing collapses to a constant).
    assert (out[0] - out[1]).abs().max() > 1e-4
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(int(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)


@pytest.mark.parametrize("name", [*TEST_CONFIGS, "random:vit_conv_test"])
def test_random_init_is_seeded_and_leaves_the_global_rng_alone(name):
    torch.manual_seed(123)
    expected_draw = torch.rand(4)
    torch.manual_seed(123)
    first = create_encoder(name).state_dict()
    assert torch.equal(torch.rand(4), expected_draw)  # building drew nothing from the caller's stream
    torch.manual_seed(999)  # the global seed does not change the encoder: its own seed does
    second = create_encoder(name).state_dict()
    other = create_encoder(name, seed=1).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    floats = [k for k, v in first.items() if v.is_floating_point() and v.numel() > 1 and v.std() > 0]
    changed = [k for k in floats if not torch.equal(first[k], other[k])]
    assert floats and len(changed) >= 0.9 * len(floats)  # a few fixed tensors (sincos positions) stay equal


def test_full_size_parameter_counts():
    # Built on the meta device: the count needs no memory or initialisation time.
    expected = {"vit_conv_base": 82_199_904, "mambaout_tiny": 22_906_080, "vmamba_tiny": 35_751_072}
    for name, count in expected.items():
        with torch.device("meta"):
            model = lookup(name)[0].build()
        assert sum(p.numel() for p in model.parameters()) == count, name
        assert model.input_size == 224
    with torch.device("meta"):
        assert lookup("mambaout_tiny")[0].build().embed_dim == 576
        assert lookup("vmamba_tiny")[0].build().embed_dim == 768
        small = lookup("vit_conv_small")[0].build()
    stem = [m.out_channels for m in small.patch_embed.proj if isinstance(m, torch.nn.Conv2d)]
    assert stem == [48, 96, 192, 384, 384] and len(small.blocks) == 11 and small.embed_dim == 384


def test_random_and_timm_entries():
    torch.manual_seed(0)
    enc = create_encoder("random:vit_conv_test")
    assert enc.weights_sha256 == RANDOM_INIT and enc.embed_dim == 64
    with pytest.raises(ClearctError, match="random initialisation"):
        create_encoder("random:vit_conv_test", weights="w.safetensors")
    timm_enc = create_encoder("timm:test_vit")
    assert timm_enc.encoder_name == "timm:test_vit"
    out = timm_enc(torch.randn(2, 3, timm_enc.input_size, timm_enc.input_size))
    assert out.shape == (2, timm_enc.embed_dim)


def test_local_weights_load_strictly_and_record_their_sha256(tmp_path):
    torch.manual_seed(1)
    source = create_encoder("vit_conv_test").eval()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    loaded = create_encoder("vit_conv_test", weights=path).eval()
    x = _inputs(loaded)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    from clearct.common.runs import sha256_file

    assert loaded.weights_sha256 == sha256_file(path)

    # A MoCo v3-style torch checkpoint: nested, prefixed, with a projector head the trunk does not have.
    ckpt = {"epoch": 3, "state_dict": {f"module.base_encoder.{k}": v for k, v in state.items()}}
    ckpt["state_dict"]["module.base_encoder.head.0.weight"] = torch.zeros(8, 64)
    ckpt["state_dict"]["module.predictor.0.weight"] = torch.zeros(8, 8)
    torch.save(ckpt, tmp_path / "moco.pth.tar")
    from_moco = create_encoder("vit_conv_test", weights=tmp_path / "moco.pth.tar").eval()
    with torch.no_grad():
        assert torch.equal(from_moco(x), source(x))

    missing = dict(state)
    del missing["blocks.0.attn.qkv.weight"]
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ClearctError, match=r"missing\.safetensors.*1 missing keys.*blocks\.0\.attn\.qkv\.weight"):
        create_encoder("vit_conv_test", weights=tmp_path / "missing.safetensors")
    extra = {**state, "blocks.9.mlp.fc1.weight": torch.zeros(2, 2)}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ClearctError, match="1 unexpected keys"):
        create_encoder("vit_conv_test", weights=tmp_path / "extra.safetensors")
    wrong = {**state, "norm.weight": torch.zeros(65)}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ClearctError, match="shape mismatches.*norm.weight"):
        create_encoder("vit_conv_test", weights=tmp_path / "wrong.safetensors")
    with pytest.raises(ClearctError, match="weights file not found"):
        create_encoder("vit_conv_test", weights=tmp_path / "nope.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ClearctError, match="junk.pt"):
        create_encoder("vit_conv_test", weights=tmp_path / "junk.pt")


@pytest.mark.parametrize("name", TEST_CONFIGS)
def test_run_folder_round_trip(tmp_path, name):
    torch.manual_seed(2)
    encoder = create_encoder(name)
    encoder.train()
    encoder(_inputs(encoder, batch=4))  # moves BatchNorm running statistics away from their init
    encoder.eval()
    run = tmp_path / "run"
    info = {"training": {"epochs": 2, "lr": 1e-4}, "data": {"scans": 3}}
    save_encoder_run(run, encoder, arch=name, windows=[("lung", -1500, 500)], info=info)
    manifest = json.loads((run / "encoder.json").read_text())
    assert manifest["arch"] == name and manifest["embed_dim"] == encoder.embed_dim
    assert manifest["windows"] == [["lung", -1500.0, 500.0]] and manifest["info"] == info
    assert manifest["clearct_version"] and len(manifest["weights_sha256"]) == 64
    loaded = create_encoder(run)
    loaded.eval()
    x = _inputs(encoder, seed=5)
    with torch.no_grad():
        assert torch.equal(loaded(x), encoder(x))
    assert loaded.weights_sha256 == manifest["weights_sha256"]
    assert loaded.windows == [("lung", -1500.0, 500.0)]
    assert (loaded.embed_dim, loaded.input_size) == (encoder.embed_dim, encoder.input_size)
    with pytest.raises(ClearctError, match="brings its own weights"):
        create_encoder(run, weights=run / "encoder.safetensors")


def test_inconsistent_run_folders_fail_with_one_line(tmp_path):
    encoder = create_encoder("mambaout_test")
    run = tmp_path / "run"
    save_encoder_run(run, encoder, arch="mambaout_test", windows=[("abdomen", -175, 275)])
    manifest = json.loads((run / "encoder.json").read_text())
    (run / "encoder.json").write_text(json.dumps({**manifest, "weights_sha256": "0" * 64}))
    with pytest.raises(ClearctError, match="differs from encoder.json"):
        create_encoder(run)
    (run / "encoder.json").write_text(json.dumps({**manifest, "embed_dim": 7}))
    with pytest.raises(ClearctError, match="embed_dim 48 of arch mambaout_test differs"):
        create_encoder(run)
    (run / "encoder.json").write_text("{broken")
    with pytest.raises(ClearctError, match="invalid JSON"):
        create_encoder(run)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ClearctError, match="not an encoder run folder"):
        create_encoder(empty)


def test_vit_conv_uses_moco_v3_fixed_sincos_positions_and_returns_the_class_token():
    torch.manual_seed(0)
    model = create_encoder("vit_conv_test").eval()
    # MoCo v3's table, written out independently: per token (i, j) on the h×w grid,
    # [sin(i·ω), cos(i·ω), sin(j·ω), cos(j·ω)] with ω_k = 1/10000^(k/(D/4)); a zero row for the class token.
    dim, (gh, gw) = model.embed_dim, model.patch_embed.grid_size
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    ii, jj = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    out_i, out_j = ii.flatten()[:, None] * omega, jj.flatten()[:, None] * omega
    table = torch.cat([out_i.sin(), out_i.cos(), out_j.sin(), out_j.cos()], dim=1)
    expected = torch.cat([torch.zeros(1, dim), table])[None]
    torch.testing.assert_close(model.pos_embed, expected)
    assert not model.pos_embed.requires_grad and model.cls_token.requires_grad
    x = _inputs(model)
    with torch.no_grad():
        tokens = model.forward_features(x)  # (B, 1 + h·w, D), after the final LayerNorm
        assert torch.equal(model(x), tokens[:, 0])


def test_mambaout_returns_the_normed_pooled_stage4_features():
    torch.manual_seed(0)
    model = create_encoder("mambaout_test").eval()
    x = _inputs(model)
    with torch.no_grad():
        feats = model.forward_features(x)  # channels-last (B, H, W, C)
        expected = model.head.norm(feats.mean(dim=(1, 2)))
        assert torch.equal(model(x), expected)
    assert model.embed_dim == feats.shape[-1] == 48
    assert not any(k.startswith("head.pre_logits") for k in model.state_dict())


def test_drasclr_runs_load_through_the_registry(tmp_path):
    from clearct.encoders.drasclr.model import TEST_ENCODER, TEST_PATCH, DrasCLREncoder

    torch.manual_seed(0)
    encoder = DrasCLREncoder(TEST_ENCODER, TEST_PATCH).eval()
    save_encoder_run(tmp_path, encoder, arch="drasclr", windows=[("lung", -1000, 200)], info=encoder.info())
    loaded = create_encoder(tmp_path).eval()
    patches, loc = torch.randn(2, 1, 16, 16, 16), torch.rand(2, 3)
    with torch.no_grad():
        assert torch.equal(loaded(patches, loc), encoder(patches, loc))
    assert loaded.is_3d and loaded.embed_dim == TEST_ENCODER.embed_dim


@pytest.mark.parametrize("name", [*TEST_CONFIGS, "timm:test_resnet", "timm:test_vit"])
def test_every_2d_encoder_takes_an_image_size(name):
    torch.manual_seed(0)
    encoder = create_encoder(name, image_size=96)
    assert encoder.input_size == 96
    out = encoder.eval()(torch.randn(2, 3, 96, 96))
    assert out.shape == (2, encoder.embed_dim) and torch.isfinite(out).all()
    assert create_encoder(name).input_size != 96  # None keeps the registry's default


def test_fixed_size_encoders_refuse_another_size():
    with pytest.raises(ClearctError, match="drasclr.* fixed input size of 32 px"):
        create_encoder("drasclr", image_size=96)
    with pytest.raises(ClearctError, match="multiple of 16"):
        create_encoder("vit_conv_test", image_size=72)


def test_vit_weights_load_at_another_size(tmp_path):
    # a fixed sin-cos table is rebuilt for the new grid; every other weight is the trained one
    torch.manual_seed(0)
    small = create_encoder("vit_conv_test")  # 64 px: 4×4 tokens
    run = tmp_path / "run"
    save_encoder_run(run, small, arch="vit_conv_test", windows=[("lung", -1500, 500)])
    with pytest.raises(ClearctError, match="trained at 64 px, not 128 px.*--allow-resize"):
        create_encoder(run, image_size=128)
    big = create_encoder(run, image_size=128, allow_resize=True).eval()
    assert big.input_size == 128 and big.patch_embed.grid_size == (8, 8)
    torch.testing.assert_close(big.pos_embed, create_encoder("vit_conv_test", image_size=128).pos_embed)
    for key, value in small.state_dict().items():
        if key != "pos_embed":
            assert torch.equal(value, big.state_dict()[key]), key
    # a learned table (timm ViT) is resampled: the corners of the grid keep their values
    vit = create_encoder("timm:test_vit")
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, tmp_path / "vit.safetensors")
    grid = vit.patch_embed.grid_size
    resized = create_encoder("timm:test_vit", weights=tmp_path / "vit.safetensors", image_size=2 * vit.input_size)
    prefix = vit.num_prefix_tokens
    assert resized.pos_embed.shape[1] == prefix + 4 * grid[0] * grid[1]
    torch.testing.assert_close(resized.pos_embed[:, :prefix], vit.pos_embed[:, :prefix])
    assert resized(torch.randn(1, 3, resized.input_size, resized.input_size)).shape == (1, vit.embed_dim)
