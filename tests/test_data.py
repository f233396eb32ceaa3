"""Tests for beta_optax.training.data: tfds copies, raw files, errors and statistics."""

import gzip
import io
import logging
import sys
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from beta_optax.training import data

# Small splits keep every file the tests write under a few kilobytes.
TRAIN_SIZE = 10
TEST_SIZE = 4


@pytest.fixture(autouse=True)
def no_debian_dataset(tmp_path_factory, monkeypatch):
    """Point the Debian Fashion-MNIST location at an empty folder, so results do not depend
    on whether the package is installed on the test machine."""
    empty = tmp_path_factory.mktemp("no_debian_dataset")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", empty)
    return empty


def make_arrays(image_shape, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, size in (("train", TRAIN_SIZE), ("test", TEST_SIZE)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (size, *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 10, size, dtype=np.int32)
    return arrays


def idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx_files(directory, arrays, compressed):
    for key, base in data._IDX_FILES.items():
        array = arrays[key]
        if key.endswith("images"):
            array = array[..., 0]
        content = idx_bytes(array)
        if compressed:
            (directory / f"{base}.gz").write_bytes(gzip.compress(content))
        else:
            (directory / base).write_bytes(content)


def cifar_records(images, labels):
    channel_major = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels[:, None].astype(np.uint8), channel_major], axis=1).tobytes()


def cifar_files(arrays):
    """Split the train arrays over the five data batches, as the real archive does."""
    files = {}
    train_parts = np.array_split(np.arange(TRAIN_SIZE), 5)
    for number, part in enumerate(train_parts, start=1):
        records = cifar_records(arrays["train_images"][part], arrays["train_labels"][part])
        files[f"data_batch_{number}.bin"] = records
    files["test_batch.bin"] = cifar_records(arrays["test_images"], arrays["test_labels"])
    return files


def write_cifar_archive(path, files):
    with tarfile.open(path, "w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def assert_arrays_equal(dataset, arrays):
    for key, expected in arrays.items():
        np.testing.assert_array_equal(getattr(dataset, key), expected, err_msg=key)
        assert getattr(dataset, key).dtype == expected.dtype, key


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_load_dataset_fashion_mnist_idx(tmp_path, compressed):
    arrays = make_arrays((28, 28, 1))
    write_idx_files(tmp_path, arrays, compressed)

    dataset = data.load_dataset("fashion_mnist", data_dir=tmp_path)

    assert_arrays_equal(dataset, arrays)
    assert dataset.source == str(tmp_path)
    assert dataset.num_classes == 10
    assert dataset.image_shape == (28, 28, 1)


def test_load_dataset_fashion_mnist_debian_folder(tmp_path, no_debian_dataset):
    arrays = make_arrays((28, 28, 1))
    write_idx_files(no_debian_dataset, arrays, compressed=True)

    dataset = data.load_dataset("fashion_mnist", data_dir=tmp_path / "empty")

    assert_arrays_equal(dataset, arrays)
    assert dataset.source == str(no_debian_dataset)


def test_load_dataset_fashion_mnist_data_dir_first(tmp_path, no_debian_dataset):
    write_idx_files(no_debian_dataset, make_arrays((28, 28, 1), seed=1), compressed=True)
    arrays = make_arrays((28, 28, 1), seed=2)
    write_idx_files(tmp_path, arrays, compressed=False)

    dataset = data.load_dataset("fashion_mnist", data_dir=tmp_path)

    assert_arrays_equal(dataset, arrays)


def corrupt_truncated(directory):
    path = directory / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    return path


def corrupt_magic(directory):
    path = directory / "t10k-labels-idx1-ubyte"
    content = bytearray(path.read_bytes())
    content[2] = 0x0D  # float32 instead of unsigned bytes
    path.write_bytes(bytes(content))
    return path


def corrupt_gzip(directory):
    path = directory / "train-labels-idx1-ubyte"
    path.unlink()
    compressed = directory / "train-labels-idx1-ubyte.gz"
    compressed.write_bytes(gzip.compress(b"\0" * 100)[:-10])
    return compressed


def corrupt_label(directory):
    path = directory / "t10k-labels-idx1-ubyte"
    content = bytearray(path.read_bytes())
    content[-1] = 10
    path.write_bytes(bytes(content))
    return path


def corrupt_count(directory):
    path = directory / "t10k-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros(TEST_SIZE + 1, np.uint8)))
    return path


@pytest.mark.parametrize(
    "corrupt",
    [corrupt_truncated, corrupt_magic, corrupt_gzip, corrupt_label, corrupt_count],
    ids=["truncated", "magic", "gzip", "label", "count"],
)
def test_load_dataset_idx_corrupt_names_file(tmp_path, corrupt):
    write_idx_files(tmp_path, make_arrays((28, 28, 1)), compressed=False)
    path = corrupt(tmp_path)

    with pytest.raises(ValueError, match=str(path.name)):
        data.load_dataset("fashion_mnist", data_dir=tmp_path)


@pytest.mark.parametrize("layout", ["folder", "data_dir", "archive"])
def test_load_dataset_cifar10_binary(tmp_path, layout):
    arrays = make_arrays((32, 32, 3))
    files = cifar_files(arrays)
    if layout == "archive":
        write_cifar_archive(tmp_path / "cifar-10-binary.tar.gz", files)
        expected_source = tmp_path / "cifar-10-binary.tar.gz"
    else:
        expected_source = tmp_path / "cifar-10-batches-bin" if layout == "folder" else tmp_path
        expected_source.mkdir(exist_ok=True)
        for name, content in files.items():
            (expected_source / name).write_bytes(content)

    dataset = data.load_dataset("cifar10", data_dir=tmp_path)

    assert_arrays_equal(dataset, arrays)
    assert dataset.source == str(expected_source)
    assert dataset.image_shape == (32, 32, 3)


def test_load_dataset_cifar10_truncated_record(tmp_path):
    files = cifar_files(make_arrays((32, 32, 3)))
    files["data_batch_3.bin"] = files["data_batch_3.bin"][:-1]
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)

    with pytest.raises(ValueError, match="data_batch_3.bin"):
        data.load_dataset("cifar10", data_dir=tmp_path)


def test_load_dataset_cifar10_archive_missing_member(tmp_path):
    files = cifar_files(make_arrays((32, 32, 3)))
    del files["test_batch.bin"]
    write_cifar_archive(tmp_path / "cifar-10-binary.tar.gz", files)

    with pytest.raises(ValueError, match="test_batch.bin"):
        data.load_dataset("cifar10", data_dir=tmp_path)


def test_load_dataset_cifar10_archive_truncated(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    write_cifar_archive(archive, cifar_files(make_arrays((32, 32, 3))))
    archive.write_bytes(archive.read_bytes()[:200])

    with pytest.raises(ValueError, match="cifar-10-binary.tar.gz"):
        data.load_dataset("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize("pickled", ["cifar-10-python.tar.gz", "cifar-10-batches-py"])
def test_load_dataset_cifar10_rejects_pickles(tmp_path, pickled):
    # Not a valid pickle either: the loader must reject the file without opening it.
    if pickled.endswith(".tar.gz"):
        (tmp_path / pickled).write_bytes(b"not read")
    else:
        (tmp_path / pickled).mkdir()
        (tmp_path / pickled / "data_batch_1").write_bytes(b"not read")

    with pytest.raises(data.DatasetNotFoundError) as raised:
        data.load_dataset("cifar10", data_dir=tmp_path)

    message = str(raised.value)
    assert f"{tmp_path / pickled} (rejected" in message
    assert "arbitrary code" in message
    assert "cifar-10-binary.tar.gz" in message


def test_load_dataset_cifar10_not_found_lists_places(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as raised:
        data.load_dataset("cifar10", data_dir=tmp_path)

    message = str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)
    assert f"tensorflow-datasets copy {tmp_path / 'cifar10'} (not found)" in message
    assert f"{tmp_path / 'cifar-10-batches-bin'} (not found)" in message
    assert f"{tmp_path / 'cifar-10-binary.tar.gz'} (not found)" in message
    assert data.CIFAR10_BINARY_URL in message
    assert "--data-dir DIR" in message
    assert "--download" in message


def test_load_dataset_tfds_folder_not_prepared(tmp_path):
    (tmp_path / "cifar10" / "3.0.2").mkdir(parents=True)

    with pytest.raises(data.DatasetNotFoundError) as raised:
        data.load_dataset("cifar10", data_dir=tmp_path)

    copy = tmp_path / "cifar10"
    assert f"tensorflow-datasets copy {copy} (not prepared as array_record)" in str(raised.value)


def test_load_dataset_missing_tfds_folder_logs_no_absl_warning(tmp_path, caplog):
    arrays = make_arrays((28, 28, 1))
    write_idx_files(tmp_path, arrays, compressed=True)

    with caplog.at_level(logging.WARNING):
        data.load_dataset("fashion_mnist", data_dir=tmp_path)

    assert "Variant folder" not in caplog.text


def test_load_dataset_fashion_mnist_not_found_lists_places(tmp_path, no_debian_dataset):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")

    with pytest.raises(data.DatasetNotFoundError) as raised:
        data.load_dataset("fashion_mnist", data_dir=tmp_path)

    message = str(raised.value)
    assert f"tensorflow-datasets copy {tmp_path / 'fashion_mnist'}" in message
    assert f"IDX files in {tmp_path} (missing train-labels-idx1-ubyte[.gz]" in message
    assert f"IDX files in {no_debian_dataset} (missing train-images-idx3-ubyte[.gz]" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--download" in message


def test_load_dataset_without_tfds_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)

    with pytest.raises(data.DatasetNotFoundError, match="tensorflow-datasets is not installed"):
        data.load_dataset("fashion_mnist", data_dir=tmp_path)

    arrays = make_arrays((28, 28, 1))
    write_idx_files(tmp_path, arrays, compressed=True)
    assert_arrays_equal(data.load_dataset("fashion_mnist", data_dir=tmp_path), arrays)


@pytest.mark.parametrize(
    ("name", "image_shape"),
    [("cifar10", (32, 32, 3)), ("fashion_mnist", (28, 28, 1))],
    ids=["cifar10", "fashion_mnist"],
)
def test_load_dataset_tfds_mock(tmp_path, name, image_shape):
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        dataset = data.load_dataset(name, data_dir=tmp_path)

    assert dataset.source == f"tfds:{tmp_path}"
    assert dataset.train_images.shape == (5, *image_shape)
    assert dataset.test_images.shape == (5, *image_shape)
    assert dataset.train_images.dtype == np.uint8
    assert dataset.train_labels.dtype == np.int32
    assert dataset.train_labels.min() >= 0
    assert dataset.train_labels.max() < 10


def fake_data_source(calls, arrays):
    """Stand in for tfds.data_source: no prepared copy, and a download that succeeds."""

    def data_source(name, *, split, data_dir, download):
        calls.append(download)
        if not download:
            raise tfds.core.DatasetNotFoundError(f"{name} not prepared")
        return [
            [
                {"image": image, "label": np.int64(label)}
                for image, label in zip(arrays[f"{s}_images"], arrays[f"{s}_labels"], strict=True)
            ]
            for s in split
        ]

    return data_source


def test_load_dataset_no_download_by_default(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tfds, "data_source", fake_data_source(calls, make_arrays((28, 28, 1))))

    with pytest.raises(data.DatasetNotFoundError):
        data.load_dataset("fashion_mnist", data_dir=tmp_path)

    assert calls == [False]


def test_load_dataset_download_after_local_search(tmp_path, monkeypatch, caplog):
    calls = []
    arrays = make_arrays((28, 28, 1))
    monkeypatch.setattr(tfds, "data_source", fake_data_source(calls, arrays))

    with caplog.at_level(logging.INFO, logger=data.__name__):
        dataset = data.load_dataset("fashion_mnist", data_dir=tmp_path, download=True)

    assert calls == [False, True]
    assert "Downloading fashion_mnist" in caplog.text
    assert_arrays_equal(dataset, arrays)


def test_load_dataset_download_not_used_when_files_exist(tmp_path, monkeypatch):
    calls = []
    arrays = make_arrays((28, 28, 1))
    write_idx_files(tmp_path, arrays, compressed=True)
    monkeypatch.setattr(tfds, "data_source", fake_data_source(calls, arrays))

    data.load_dataset("fashion_mnist", data_dir=tmp_path, download=True)

    assert calls == [False]


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError, match="`name`='mnist'"):
        data.load_dataset("mnist")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("train_images", np.zeros((4, 8, 8, 1), np.float32)),
        ("train_images", np.zeros((4, 8, 8), np.uint8)),
        ("train_labels", np.zeros(4, np.int64)),
        ("train_labels", np.zeros(3, np.int32)),
        ("test_images", np.zeros((2, 9, 9, 1), np.uint8)),
    ],
    ids=["float_images", "no_channel_axis", "int64_labels", "label_count", "test_shape"],
)
def test_dataset_invalid_arrays(field, value):
    fields = {
        "train_images": np.zeros((4, 8, 8, 1), np.uint8),
        "train_labels": np.zeros(4, np.int32),
        "test_images": np.zeros((2, 8, 8, 1), np.uint8),
        "test_labels": np.zeros(2, np.int32),
    }
    fields[field] = value

    with pytest.raises(ValueError, match="images|labels"):
        data.Dataset(**fields, num_classes=10, name="test", source="memory")


@pytest.mark.parametrize("channels", [1, 3])
def test_dataset_statistics_matches_numpy(channels):
    images = np.random.default_rng(channels).integers(0, 256, (7, 5, 6, channels), np.uint8)

    mean, std = data.dataset_statistics(images)

    scaled = images.astype(np.float64) / 255.0
    assert mean.dtype == np.float32
    assert std.dtype == np.float32
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 1, 2)), rtol=1e-6)


@pytest.mark.parametrize(
    "images",
    [np.zeros((2, 4, 4, 1), np.float32), np.zeros((2, 4, 4), np.uint8), np.zeros((0, 4, 4, 1))],
    ids=["float", "three_dims", "empty"],
)
def test_dataset_statistics_invalid(images):
    with pytest.raises(ValueError, match="`images`"):
        data.dataset_statistics(images)


REAL_FASHION_MNIST = data.DEBIAN_FASHION_MNIST_DIR


@pytest.mark.skipif(
    not REAL_FASHION_MNIST.is_dir(),
    reason=f"{REAL_FASHION_MNIST} missing (apt-get install dataset-fashion-mnist)",
)
def test_load_dataset_real_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", REAL_FASHION_MNIST)

    dataset = data.load_dataset("fashion_mnist", data_dir=tmp_path)

    assert dataset.train_images.shape == (60000, 28, 28, 1)
    assert dataset.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(dataset.train_labels).tolist() == [6000] * 10
    assert np.bincount(dataset.test_labels).tolist() == [1000] * 10
