import io
import json
import zipfile

import numpy as np
import pytest
import torch

from sn2n_live.method._package import (
    FORMAT_VERSION,
    ModelPackage,
    ModelPackageError,
    load_package,
    save_package,
)
from sn2n_live.method._risk import RiskThresholds
from sn2n_live.method._unet import UNet, UNetConfig

TINY = UNetConfig(depth=2, base_channels=4)


def _package(seed: int = 0, **overrides) -> ModelPackage:
    torch.manual_seed(seed)
    model = UNet(TINY)
    # Non-trivial BatchNorm buffers, as after training.
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 1, 16, 16))
    fields = {
        "unet": TINY,
        "state_dict": model.state_dict(),
        "policy": "dataset",
        "resolved_mode": "local",
        "thresholds": RiskThresholds(clip_percentile=99.9, patch_size=32),
        "upsample": "exact",
        "patch_size": 32,
        "camera_offset_adu": 100.0,
        "training": {"train_loss": [0.3, 0.2, np.float32(0.1)], "epochs_run": np.int64(3)},
        "provenance": {"seed": 0, "data_sha256": "ab" * 32, "versions": {"torch": "x"}},
    }
    fields.update(overrides)
    return ModelPackage(**fields)


def _rewrite(src, dst, *, manifest=None, weights=None, drop=()):
    """Copy a package zip, replacing or dropping members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name in drop:
                continue
            data = zin.read(name)
            if name == "manifest.json" and manifest is not None:
                data = json.dumps(manifest(json.loads(data))).encode()
            if name == "weights.pt" and weights is not None:
                data = weights
            zout.writestr(name, data)
    return dst


@pytest.fixture
def saved(tmp_path):
    pkg = _package()
    return pkg, save_package(pkg, tmp_path / "model.sn2n")


def test_round_trip(saved):
    pkg, path = saved
    assert path.is_file()
    assert zipfile.ZipFile(path).namelist() == ["manifest.json", "weights.pt"]
    loaded = load_package(path)
    assert loaded.sha256 == pkg.sha256
    assert loaded.state_dict.keys() == pkg.state_dict.keys()
    for key, value in pkg.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value), key
    assert loaded.unet == pkg.unet
    assert loaded.policy == "dataset"
    assert loaded.resolved_mode == "local"
    assert loaded.thresholds == pkg.thresholds
    assert loaded.upsample == "exact"
    assert loaded.patch_size == 32
    assert loaded.camera_offset_adu == 100.0
    assert loaded.training == {"train_loss": [0.3, 0.2, pytest.approx(0.1)], "epochs_run": 3}
    assert loaded.provenance == pkg.provenance
    x = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.build_model()(x), pkg.build_model()(x), rtol=0, atol=0)


def test_manifest_layout(saved):
    pkg, path = saved
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert manifest["format"] == "sn2n-live-model"
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert manifest["unet"] == {
        "depth": 2,
        "base_channels": 4,
        "leaky_slope": 0.02,
        "head": "sigmoid",
    }
    assert manifest["normalization"]["policy"] == "dataset"
    assert manifest["normalization"]["resolved_mode"] == "local"
    assert manifest["normalization"]["thresholds"]["clip_percentile"] == 99.9
    assert manifest["normalization"]["scale"] == "min_clip"
    assert manifest["twins"] == {"upsample": "exact", "inference": "frame", "compensate": False}
    assert manifest["default_tile"] == 32
    assert manifest["camera_offset_adu"] == 100.0
    assert manifest["weights_sha256"] == pkg.sha256
    # The weights load without unpickling arbitrary objects.
    weights = zipfile.ZipFile(path).read("weights.pt")
    state = torch.load(io.BytesIO(weights), weights_only=True)
    assert torch.equal(state["outc.weight"], pkg.state_dict["outc.weight"])


def test_sha256_is_deterministic_and_content_sensitive(tmp_path):
    a, b = _package(seed=0), _package(seed=0)
    assert a.sha256 == b.sha256
    assert len(a.sha256) == 64
    assert _package(seed=1).sha256 != a.sha256
    changed = {k: v.clone() for k, v in a.state_dict.items()}
    changed["outc.bias"] += 1e-3
    assert _package(state_dict=changed).sha256 != a.sha256
    # Saving the same package twice gives byte-identical files.
    p1 = save_package(a, tmp_path / "a.sn2n")
    p2 = save_package(b, tmp_path / "b.sn2n")
    assert p1.read_bytes() == p2.read_bytes()


def test_build_model_is_in_eval_mode(saved):
    pkg, _ = saved
    model = pkg.build_model()
    assert isinstance(model, UNet)
    assert not model.training
    assert model.multiple == 4


def test_save_is_atomic_and_overwrites(tmp_path):
    path = tmp_path / "sub" / "model.sn2n"
    save_package(_package(seed=0), path)
    save_package(_package(seed=1), path)
    assert load_package(path).sha256 == _package(seed=1).sha256
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.sn2n"]


def test_save_rejects_unserializable_training_stats(tmp_path):
    pkg = _package(training={"callback": object()})
    with pytest.raises(ValueError, match="JSON-serializable"):
        save_package(pkg, tmp_path / "m.sn2n")
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path):
    with pytest.raises(ModelPackageError, match=r"nope\.sn2n does not exist"):
        load_package(tmp_path / "nope.sn2n")
    with pytest.raises(ModelPackageError, match="is a directory"):
        load_package(tmp_path)


def test_truncated_file(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 30):
        bad = tmp_path / f"cut{cut}.sn2n"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelPackageError, match="not a zip archive, or it is truncated"):
            load_package(bad)


def test_random_bytes(tmp_path):
    bad = tmp_path / "random.sn2n"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ModelPackageError, match=r"random\.sn2n: not a readable"):
        load_package(bad)


def test_corrupted_weight_bytes_fail_the_zip_crc(saved, tmp_path):
    _, path = saved
    data = bytearray(path.read_bytes())
    offset = data.find(b"weights.pt") + 5000  # inside the stored weights payload
    data[offset] ^= 0xFF
    bad = tmp_path / "flipped.sn2n"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match="corrupt"):
        load_package(bad)


def test_tampered_weights(saved, tmp_path):
    pkg, path = saved
    state = {k: v.clone() for k, v in pkg.state_dict.items()}
    state["inc.0.weight"] *= 2
    buffer = io.BytesIO()
    torch.save(state, buffer)
    bad = _rewrite(path, tmp_path / "tampered.sn2n", weights=buffer.getvalue())
    with pytest.raises(ModelPackageError, match=r"weights hash mismatch.*corrupt or were modified"):
        load_package(bad)


def test_weights_that_are_not_a_state_dict(saved, tmp_path):
    _, path = saved
    bad = _rewrite(path, tmp_path / "junk.sn2n", weights=b"not a torch archive")
    with pytest.raises(ModelPackageError, match="cannot be read as a torch state_dict"):
        load_package(bad)


def test_wrong_format_tag(saved, tmp_path):
    _, path = saved
    bad = _rewrite(path, tmp_path / "tag.sn2n", manifest=lambda m: {**m, "format": "other"})
    with pytest.raises(ModelPackageError, match="not an sn2n-live model package"):
        load_package(bad)


def test_version_1_manifest_reads_as_the_published_method(saved, tmp_path):
    pkg, path = saved

    def as_v1(m):
        unet = {k: v for k, v in m["unet"].items() if k != "head"}
        norm = {k: v for k, v in m["normalization"].items() if k != "scale"}
        return {
            **m,
            "format_version": 1,
            "unet": unet,
            "normalization": norm,
            "twins": {"upsample": m["twins"]["upsample"]},
        }

    old = load_package(_rewrite(path, tmp_path / "v1.sn2n", manifest=as_v1))
    assert (old.unet.head, old.scale, old.inference) == ("sigmoid", "min_clip", "frame")
    assert old.compensate is False
    assert old.sha256 == pkg.sha256


def test_newer_format_version(saved, tmp_path):
    _, path = saved
    bad = _rewrite(path, tmp_path / "v3.sn2n", manifest=lambda m: {**m, "format_version": 3})
    with pytest.raises(ModelPackageError, match=r"format_version 3 is newer.*Upgrade sn2n-live"):
        load_package(bad)


@pytest.mark.parametrize("version", [0, "1", None, True])
def test_invalid_format_version(saved, tmp_path, version):
    _, path = saved
    bad = _rewrite(path, tmp_path / "v.sn2n", manifest=lambda m: {**m, "format_version": version})
    with pytest.raises(ModelPackageError, match="invalid format_version"):
        load_package(bad)


def test_missing_members(saved, tmp_path):
    _, path = saved
    no_manifest = _rewrite(path, tmp_path / "nm.sn2n", drop=("manifest.json",))
    with pytest.raises(ModelPackageError, match=r"no 'manifest\.json'.*\['weights\.pt'\]"):
        load_package(no_manifest)
    no_weights = _rewrite(path, tmp_path / "nw.sn2n", drop=("weights.pt",))
    with pytest.raises(ModelPackageError, match=r"no 'weights\.pt'"):
        load_package(no_weights)


def test_manifest_not_json(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "nj.sn2n"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("manifest.json", b"{not json")
        z.writestr("weights.pt", zipfile.ZipFile(path).read("weights.pt"))
    with pytest.raises(ModelPackageError, match="not valid JSON"):
        load_package(bad)


def test_manifest_schema_errors_name_the_field(saved, tmp_path):
    _, path = saved

    def edit(m):
        m["normalization"]["resolved_mode"] = "sideways"
        del m["default_tile"]
        return m

    bad = _rewrite(path, tmp_path / "schema.sn2n", manifest=edit)
    with pytest.raises(
        ModelPackageError, match=r"normalization\.resolved_mode.*default_tile: Field required"
    ):
        load_package(bad)


def test_inconsistent_manifest(saved, tmp_path):
    _, path = saved

    def edit(m):
        m["normalization"]["policy"] = "global"  # but resolved_mode is "local"
        return m

    bad = _rewrite(path, tmp_path / "inc.sn2n", manifest=edit)
    with pytest.raises(ModelPackageError, match=r"inconsistent manifest.*not valid for policy"):
        load_package(bad)


def test_weights_not_matching_architecture(saved, tmp_path):
    pkg, path = saved
    # A manifest that claims a wider network than the weights are for; the hash still
    # matches, so only the architecture check can catch it.
    bad = _rewrite(
        path,
        tmp_path / "arch.sn2n",
        manifest=lambda m: {**m, "unet": {**m["unet"], "base_channels": 8}},
    )
    with pytest.raises(ModelPackageError, match=r"does not fit the U-Net.*shape: inc\.0\.weight"):
        load_package(bad)
    pruned = dict(pkg.state_dict)
    del pruned["outc.bias"]
    with pytest.raises(ModelPackageError, match=r"missing: outc\.bias"):
        _package(state_dict=pruned).build_model()


def test_package_field_validation():
    with pytest.raises(ValueError, match="not valid for policy 'global'"):
        _package(policy="global", resolved_mode="per_patch")
    with pytest.raises(ValueError, match="not valid for policy 'dataset'"):
        _package(policy="dataset", resolved_mode="per_patch")
    with pytest.raises(ValueError, match="patch_size 30 must be a positive multiple of 4"):
        _package(patch_size=30)
    with pytest.raises(ValueError, match="upsample"):
        _package(upsample="bicubic")
    with pytest.raises(ValueError, match="camera_offset_adu"):
        _package(camera_offset_adu=float("nan"))
    with pytest.raises(ValueError, match="state_dict"):
        _package(state_dict={"w": np.zeros(3)})
    with pytest.raises(ValueError, match="UNetConfig"):
        _package(unet={"depth": 2})


def test_untrained_package_is_seeded_and_usable():
    from sn2n_live.method import PRESETS, Denoiser

    a = ModelPackage.untrained(PRESETS["lite"], mode="per_patch", seed=1)
    b = ModelPackage.untrained(PRESETS["lite"], mode="per_patch", seed=1)
    c = ModelPackage.untrained(PRESETS["lite"], mode="per_patch", seed=2)
    assert a.sha256 == b.sha256 != c.sha256
    assert a.provenance["untrained"] is True
    out = Denoiser(a).denoise(np.full((64, 64), 7.0, np.float32))
    np.testing.assert_allclose(out, 7.0, atol=1e-3)
