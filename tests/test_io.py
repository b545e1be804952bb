import numpy as np
import pytest
import tifffile
import zarr

from sn2n_live.io import StackWriter, open_stack, read_frames, read_provenance


@pytest.fixture
def stack_tiff(tmp_path):
    data = np.arange(2 * 3 * 16 * 24, dtype=np.uint16).reshape(2, 3, 16, 24)
    path = tmp_path / "in.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "TCYX"})
    return path, data


def test_open_ome_tiff_keeps_axes_and_frames(stack_tiff):
    path, data = stack_tiff
    stack = open_stack(path)
    assert stack.axes == "tcyx"
    assert stack.n_frames == 6
    assert stack.frame_shape == (16, 24)
    chunks = list(stack.iter_chunks(4))
    assert [len(c) for c in chunks] == [4, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), data.reshape(-1, 16, 24))


@pytest.mark.parametrize("name", ["out.ome.zarr", "out.ome.tif"])
@pytest.mark.parametrize("dtype", ["float32", "uint16"])
def test_writer_round_trip_with_provenance(stack_tiff, tmp_path, name, dtype):
    path, data = stack_tiff
    stack = open_stack(path)
    out = tmp_path / name
    with StackWriter(
        out, shape=stack.shape, axes=stack.axes, dtype=dtype, provenance={"model_sha256": "abc"}
    ) as writer:
        for chunk in stack.iter_chunks(5):
            writer.write(chunk.astype(np.float32) + 0.4)
    back = open_stack(out)
    assert back.shape == data.shape
    assert back.axes == "tcyx"
    stored = np.asarray(back.data[...])
    assert stored.dtype == np.dtype(dtype)
    expected = data + 0.4 if dtype == "float32" else data
    np.testing.assert_allclose(stored, expected.astype(dtype), rtol=1e-6)
    assert read_provenance(out) == {"model_sha256": "abc"}


def test_zarr_written_by_us_is_plain_ome_zarr(stack_tiff, tmp_path):
    _, data = stack_tiff
    out = tmp_path / "plain.ome.zarr"
    with StackWriter(out, shape=data.shape, axes="tcyx", provenance={}) as writer:
        writer.write(data.reshape(-1, 16, 24).astype(np.float32))
    group = zarr.open_group(str(out), mode="r")
    axes = [a["name"] for a in group.attrs["ome"]["multiscales"][0]["axes"]]
    assert axes == ["t", "c", "y", "x"]
    np.testing.assert_array_equal(group["0"][...], data.astype(np.float32))


def test_read_frames_concatenates_and_checks_sizes(stack_tiff, tmp_path):
    path, _ = stack_tiff
    assert read_frames([path, path]).shape == (12, 16, 24)
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, np.zeros((8, 8), np.uint16))
    with pytest.raises(ValueError, match="same frame size"):
        read_frames([path, other])


def test_errors_are_specific(tmp_path):
    with pytest.raises(FileNotFoundError, match="No image stack"):
        open_stack(tmp_path / "missing.tif")
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Unsupported image format"):
        open_stack(tmp_path / "x.png")
    existing = tmp_path / "exists.tif"
    existing.write_bytes(b"")
    with pytest.raises(FileExistsError):
        StackWriter(existing, shape=(1, 4, 4), axes="qyx", provenance={})
    writer = StackWriter(tmp_path / "w.ome.tif", shape=(2, 4, 4), axes="qyx", provenance={})
    with pytest.raises(ValueError, match="Expected frames of shape"):
        writer.write(np.zeros((1, 5, 4)))
    with pytest.raises(ValueError, match="Too many frames"):
        writer.write(np.zeros((3, 4, 4)))
