import os
import stat
from pathlib import Path

import numpy as np
import pytest

from sn2n_live._outputs import OutputPathError, check_output, check_writable_dir
from sn2n_live.acquisition._writers import write_json_atomic
from sn2n_live.io import StackWriter, open_stack
from sn2n_live.method import ModelPackage, UNetConfig, save_package
from sn2n_live.method._risk import RiskThresholds
from sn2n_live.method._unet import UNet


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_027():
    """A umask that differs from both mkstemp's 0o600 and the usual 0o644."""
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_written_files_follow_the_umask(tmp_path, umask_027):
    write_json_atomic(tmp_path / "run.json", {"a": 1})
    assert _mode(tmp_path / "run.json") == umask_027
    unet = UNetConfig(depth=2, base_channels=4)
    package = ModelPackage(
        unet=unet,
        state_dict=UNet(unet).state_dict(),
        policy="per_patch",
        resolved_mode="per_patch",
        thresholds=RiskThresholds(),
        upsample="exact",
        patch_size=32,
    )
    assert _mode(save_package(package, tmp_path / "model.sn2n")) == umask_027
    with StackWriter(
        tmp_path / "out.ome.zarr", shape=(2, 8, 8), axes="qyx", provenance={}
    ) as writer:
        writer.write(np.ones((2, 8, 8)))
    docs = sorted((tmp_path / "out.ome.zarr").rglob("zarr.json"))
    assert len(docs) >= 2
    assert {_mode(doc) for doc in docs} == {umask_027}


@pytest.mark.parametrize("name", ["out.ome.zarr", "out.ome.tif"])
def test_a_failed_write_leaves_nothing(tmp_path, name):
    out = tmp_path / name
    with (
        pytest.raises(RuntimeError, match="denoiser failed"),
        StackWriter(out, shape=(3, 8, 8), axes="qyx", provenance={"x": 1}) as writer,
    ):
        writer.write(np.ones((1, 8, 8)))
        raise RuntimeError("denoiser failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.ome.zarr", "out.ome.tif"])
def test_overwrite_replaces_only_when_complete(tmp_path, name):
    out = tmp_path / name
    for value in (1.0, 2.0):
        with StackWriter(out, shape=(2, 8, 8), axes="qyx", provenance={}, overwrite=True) as writer:
            writer.write(np.full((2, 8, 8), value))
    with (
        pytest.raises(RuntimeError),
        StackWriter(out, shape=(2, 8, 8), axes="qyx", provenance={}, overwrite=True) as writer,
    ):
        writer.write(np.full((1, 8, 8), 5.0))
        raise RuntimeError
    # The failed third write left the second, complete output in place.
    assert np.all(np.asarray(open_stack(out).data[...]) == 2.0)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_check_output_names_the_fix(tmp_path):
    existing = tmp_path / "model.sn2n"
    existing.write_bytes(b"x")
    with pytest.raises(FileExistsError, match=r"already exists; .* pass --overwrite to replace"):
        check_output(existing, overwrite_hint="--overwrite", what="model package")
    assert check_output(existing, overwrite=True) == existing
    nested = tmp_path / "new" / "deeper" / "x.ome.tif"
    assert check_output(nested) == nested
    assert nested.parent.is_dir()  # the parent is created
    assert not nested.exists()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(OutputPathError, match=r"cannot write the output in .*a-file"):
        check_output(a_file / "x.ome.tif")


def test_unwritable_folder_is_refused_with_one_line(unwritable_dir):
    folder = unwritable_dir
    with pytest.raises(OutputPathError) as info:
        check_writable_dir(folder / "run", what="run folder")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write the run folder in {folder / 'run'}: ")
    assert message.endswith("choose a folder you can write to")
