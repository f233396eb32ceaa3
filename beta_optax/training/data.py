"""Image classification datasets loaded whole into numpy arrays: CIFAR-10 and Fashion-MNIST.

`load_dataset` looks in this order and stops at the first complete copy:

1. a prepared tensorflow-datasets copy in `data_dir`, read with `tfds.data_source`, which needs
   no TensorFlow when the copy is stored as array_record;
2. the original files in `data_dir`: the CIFAR-10 binary version (`cifar-10-batches-bin/` or
   `cifar-10-binary.tar.gz`), or the four Fashion-MNIST IDX files, plain or gzipped;
3. for Fashion-MNIST, the IDX files of the Debian package `dataset-fashion-mnist`;
4. only when `download=True`, a tensorflow-datasets download into `data_dir`.

The CIFAR-10 python version (`cifar-10-python.tar.gz`) is rejected: it stores pickles, and
unpickling a file can run arbitrary code.
"""

import contextlib
import dataclasses
import gzip
import logging
import os
import pathlib
import tarfile
import zlib

import numpy as np

logger = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
CIFAR10_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"

_CIFAR10_FOLDER = "cifar-10-batches-bin"
_CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
_CIFAR10_PICKLED = ("cifar-10-python.tar.gz", "cifar-10-batches-py")
_CIFAR10_FILES = {
    "train": tuple(f"data_batch_{number}.bin" for number in range(1, 6)),
    "test": ("test_batch.bin",),
}
# A CIFAR-10 binary record is one label byte followed by a 32x32x3 image stored channel-major.
_CIFAR10_IMAGE_CHW = (3, 32, 32)
_CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Third byte of an IDX magic number: 0x08 marks unsigned bytes.
_IDX_UNSIGNED_BYTE = 0x08

_SPLITS = ("train", "test")
# Format string of the absl warning tensorflow-datasets 4.9.10 logs on every probe of a folder
# without a prepared copy.
_MISSING_VARIANT_WARNING = "Variant folder %s has no "


class DatasetNotFoundError(FileNotFoundError):
    """No usable copy of a dataset was found, and downloading was not allowed or failed."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset, both splits held in host memory.

    Attributes:
        train_images: uint8 array of shape (examples, height, width, channels).
        train_labels: int32 array of shape (examples,), values in [0, num_classes).
        test_images: uint8 array, same layout as `train_images`.
        test_labels: int32 array, same layout as `train_labels`.
        num_classes: number of classes.
        name: dataset name as passed to `load_dataset`, for example "cifar10".
        source: where the arrays were read from (a path or a tfds data directory).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    name: str
    source: str

    def __post_init__(self):
        for split in _SPLITS:
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim != 4:
                raise ValueError(
                    f"`{split}_images` must be uint8 NHWC, got dtype={images.dtype} "
                    f"shape={images.shape}."
                )
            if labels.dtype != np.int32 or labels.shape != images.shape[:1]:
                raise ValueError(
                    f"`{split}_labels` must be int32 with shape {images.shape[:1]}, got "
                    f"dtype={labels.dtype} shape={labels.shape}."
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                f"Train and test images differ in shape: {self.train_images.shape[1:]} vs "
                f"{self.test_images.shape[1:]}."
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape (height, width, channels) of one image."""
        return tuple(self.train_images.shape[1:])


@dataclasses.dataclass(frozen=True)
class _DatasetSpec:
    tfds_name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    # Instructions to obtain the files, shown in DatasetNotFoundError.
    how_to_get: str


_SPECS = {
    "cifar10": _DatasetSpec(
        tfds_name="cifar10",
        image_shape=(32, 32, 3),
        num_classes=10,
        how_to_get=(
            "download the binary version {url} and put it (or the folder "
            "cifar-10-batches-bin it contains) in {data_dir}"
        ),
    ),
    "fashion_mnist": _DatasetSpec(
        tfds_name="fashion_mnist",
        image_shape=(28, 28, 1),
        num_classes=10,
        how_to_get=(
            "run `apt-get install dataset-fashion-mnist`, or put the four IDX files "
            "(train-images-idx3-ubyte.gz, ...) in {data_dir}"
        ),
    ),
}

DATASET_NAMES = tuple(_SPECS)


def default_data_dir() -> pathlib.Path:
    """Return the tensorflow-datasets data directory: $TFDS_DATA_DIR or ~/tensorflow_datasets."""
    return pathlib.Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def load_dataset(
    name: str, *, data_dir: str | os.PathLike | None = None, download: bool = False
) -> Dataset:
    """Load the train and test splits of a dataset into host memory.

    Args:
        name: "cifar10" or "fashion_mnist".
        data_dir: directory holding a prepared tensorflow-datasets copy or the original files.
            Defaults to `default_data_dir()`.
        download: when no local copy exists, download and prepare one with
            tensorflow-datasets in `data_dir`. Offline, tensorflow-datasets retries for
            minutes before it fails, so this is off by default.

    Returns:
        The dataset, images uint8 NHWC (Fashion-MNIST gets one channel) and labels int32.

    Raises:
        ValueError: `name` is unknown, or a file that was found is corrupt (the message
            names the file).
        DatasetNotFoundError: no copy was found. The message names every place looked at
            and how to provide the data.
    """
    if name not in _SPECS:
        raise ValueError(f"Invalid dataset `name`={name!r}, expected one of {DATASET_NAMES}.")
    spec = _SPECS[name]
    directory = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()
    looked_at = []

    dataset = _load_prepared_tfds(name, spec, directory, looked_at)
    if dataset is None:
        dataset = _load_local_files(name, spec, directory, looked_at)
    if dataset is None and download:
        dataset = _download_tfds(name, spec, directory, looked_at)
    if dataset is None:
        raise DatasetNotFoundError(_not_found_message(name, spec, directory, looked_at))

    logger.info(
        "Loaded %s from %s: %d train and %d test images of shape %s.",
        name,
        dataset.source,
        len(dataset.train_labels),
        len(dataset.test_labels),
        dataset.image_shape,
    )
    return dataset


def dataset_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compute the per-channel mean and standard deviation of uint8 images, in [0, 1] units.

    The statistics are exact: they come from a 256-bin histogram of each channel, so no
    float copy of the images is made. Pass the train split, so that normalization uses no
    information from the test split.

    Args:
        images: uint8 array of shape (examples, height, width, channels).

    Returns:
        `(mean, std)`, two float32 arrays of shape (channels,). `std` is the population
        standard deviation.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.size == 0:
        raise ValueError(
            "`images` must be a non-empty uint8 array of shape (examples, height, width, "
            f"channels), got dtype={images.dtype} shape={images.shape}."
        )
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[-1]):
        counts = np.bincount(images[..., channel].ravel(), minlength=256)
        total = counts.sum()
        mean = np.dot(counts, values) / total
        variance = np.dot(counts, (values - mean) ** 2) / total
        means.append(mean)
        stds.append(np.sqrt(variance))
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


def _load_prepared_tfds(name, spec, directory, looked_at):
    """Read a prepared tensorflow-datasets copy, or return None when there is none."""
    place = f"tensorflow-datasets copy {directory / spec.tfds_name}"
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        looked_at.append(f"{place} (tensorflow-datasets is not installed)")
        return None

    try:
        # The call stays even when the folder is missing, because tfds.testing.mock_data
        # serves data for any data_dir; only its warning about the missing folder is dropped.
        with _absl_warnings_dropped(_MISSING_VARIANT_WARNING):
            sources = tfds.data_source(
                spec.tfds_name, split=list(_SPLITS), data_dir=os.fspath(directory), download=False
            )
    except (tfds.core.DatasetNotFoundError, FileNotFoundError, NotImplementedError) as error:
        # tensorflow-datasets 4.9.10 raises NotImplementedError when the directory has no
        # dataset_info.json, because it then assumes TFRecord files, which need TensorFlow.
        logger.debug("No prepared tfds copy of %s in %s: %s", name, directory, error)
        found = (directory / spec.tfds_name).exists()
        looked_at.append(f"{place} ({'not prepared as array_record' if found else 'not found'})")
        return None

    return _dataset_from_tfds_sources(name, spec, sources, f"tfds:{directory}")


class _DropMessages(logging.Filter):
    """A logging filter that drops records whose format string starts with a prefix."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def _absl_warnings_dropped(prefix: str):
    """Drop the absl log records that start with `prefix` while the block runs."""
    absl_logger = logging.getLogger("absl")
    message_filter = _DropMessages(prefix)
    absl_logger.addFilter(message_filter)
    try:
        yield
    finally:
        absl_logger.removeFilter(message_filter)


def _download_tfds(name, spec, directory, looked_at):
    """Download and prepare the dataset with tensorflow-datasets, or return None on failure."""
    place = f"tensorflow-datasets download into {directory}"
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        looked_at.append(f"{place} (tensorflow-datasets is not installed)")
        return None

    logger.info(
        "Downloading %s with tensorflow-datasets into %s. Without network access this retries "
        "for minutes before it fails.",
        name,
        directory,
    )
    try:
        sources = tfds.data_source(
            spec.tfds_name, split=list(_SPLITS), data_dir=os.fspath(directory), download=True
        )
    except Exception as error:  # noqa: BLE001 - tfds raises many error types, each a failed download.
        logger.error("Download of %s into %s failed: %r", name, directory, error)
        looked_at.append(f"{place} (failed: {error!r})")
        return None

    return _dataset_from_tfds_sources(name, spec, sources, f"tfds:{directory}")


def _dataset_from_tfds_sources(name, spec, sources, source):
    arrays = {}
    for split, split_source in zip(_SPLITS, sources, strict=True):
        images, labels = _read_tfds_split(split_source, spec.image_shape)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
    _check_labels(arrays["train_labels"], spec.num_classes, source)
    _check_labels(arrays["test_labels"], spec.num_classes, source)
    return Dataset(**arrays, num_classes=spec.num_classes, name=name, source=source)


def _read_tfds_split(split_source, image_shape):
    # One record at a time, because the batched `__getitems__` fails under
    # tfds.testing.mock_data (tensorflow-datasets 4.9.10).
    # NOTE: this path has run only against mock_data, not a real prepared copy, so the time
    # to decode 50000 images one by one is unmeasured.
    count = len(split_source)
    images = np.empty((count, *image_shape), np.uint8)
    labels = np.empty((count,), np.int32)
    for index in range(count):
        record = split_source[index]
        image = np.asarray(record["image"])
        if image.shape != image_shape:
            raise ValueError(
                f"Record {index} of {split_source!r} has image shape {image.shape}, "
                f"expected {image_shape}."
            )
        images[index] = image
        labels[index] = record["label"]
    return images, labels


def _load_local_files(name, spec, directory, looked_at):
    """Read the original dataset files, or return None when no complete set exists."""
    if name == "cifar10":
        arrays, source = _find_cifar10_binary(directory, looked_at)
    else:
        arrays, source = _find_fashion_mnist_idx([directory, DEBIAN_FASHION_MNIST_DIR], looked_at)
    if arrays is None:
        return None

    for split in _SPLITS:
        images = arrays[f"{split}_images"]
        if images.shape[1:] != spec.image_shape:
            raise ValueError(
                f"{split} images in {source} have shape {images.shape[1:]}, expected "
                f"{spec.image_shape}."
            )
        _check_labels(arrays[f"{split}_labels"], spec.num_classes, source)
    return Dataset(**arrays, num_classes=spec.num_classes, name=name, source=source)


def _not_found_message(name, spec, directory, looked_at):
    places = "\n".join(f"  - {place}" for place in looked_at)
    how_to_get = spec.how_to_get.format(url=CIFAR10_BINARY_URL, data_dir=directory)
    return (
        f"Dataset {name!r} not found. Looked at:\n{places}\n"
        f"To provide it, {how_to_get}, or point `data_dir` (`--data-dir DIR` on the command "
        f"line) at the folder that holds the files. Or pass `download=True` (`--download` on "
        f"the command line) to let tensorflow-datasets download it into {directory}."
    )


def _check_labels(labels, num_classes, origin):
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{origin} has labels in [{labels.min()}, {labels.max()}], outside "
            f"[0, {num_classes}). The file is corrupt or belongs to another dataset."
        )


def _find_cifar10_binary(directory, looked_at):
    """Read the CIFAR-10 binary version from a folder or archive in `directory`.

    Returns:
        `(arrays, source)`, or `(None, None)` when no complete copy exists. `arrays` maps
        "train_images", "train_labels", "test_images" and "test_labels" to numpy arrays.
    """
    for folder in (directory / _CIFAR10_FOLDER, directory):
        paths = {
            split: [folder / file for file in files] for split, files in _CIFAR10_FILES.items()
        }
        missing = [path.name for split_paths in paths.values() for path in split_paths]
        missing = [file for file in missing if not (folder / file).is_file()]
        if not folder.is_dir():
            looked_at.append(f"CIFAR-10 binary folder {folder} (not found)")
            continue
        if missing:
            looked_at.append(f"CIFAR-10 binary folder {folder} (missing {', '.join(missing)})")
            continue
        arrays = {}
        for split, split_paths in paths.items():
            chunks = [_parse_cifar10_records(path.read_bytes(), str(path)) for path in split_paths]
            arrays[f"{split}_images"] = np.concatenate([images for images, _ in chunks])
            arrays[f"{split}_labels"] = np.concatenate([labels for _, labels in chunks])
        return arrays, str(folder)

    archive = directory / _CIFAR10_ARCHIVE
    if archive.is_file():
        return _read_cifar10_archive(archive), str(archive)
    looked_at.append(f"CIFAR-10 binary archive {archive} (not found)")

    for pickled in _CIFAR10_PICKLED:
        if (directory / pickled).exists():
            looked_at.append(
                f"{directory / pickled} (rejected: the python version stores pickles, and "
                f"unpickling can run arbitrary code, so get {_CIFAR10_ARCHIVE} instead)"
            )
    return None, None


def _read_cifar10_archive(archive):
    arrays = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for split, files in _CIFAR10_FILES.items():
                chunks = []
                for file in files:
                    member = f"{_CIFAR10_FOLDER}/{file}"
                    try:
                        data = tar.extractfile(member).read()
                    except KeyError:
                        raise ValueError(
                            f"{archive} has no member {member}. The archive is incomplete. "
                            f"Download it again from {CIFAR10_BINARY_URL}."
                        ) from None
                    chunks.append(_parse_cifar10_records(data, f"{archive}:{member}"))
                arrays[f"{split}_images"] = np.concatenate([images for images, _ in chunks])
                arrays[f"{split}_labels"] = np.concatenate([labels for _, labels in chunks])
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(
            f"Cannot read {archive}: {error}. The file is corrupt or truncated. Download it "
            f"again from {CIFAR10_BINARY_URL}."
        ) from error
    return arrays


def _parse_cifar10_records(data, origin):
    if not data or len(data) % _CIFAR10_RECORD_BYTES:
        raise ValueError(
            f"{origin} has {len(data)} bytes, not a whole number of "
            f"{_CIFAR10_RECORD_BYTES}-byte CIFAR-10 records. The file is corrupt or truncated."
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR10_RECORD_BYTES)
    labels = records[:, 0].astype(np.int32)
    _check_labels(labels, 10, origin)
    images = records[:, 1:].reshape(-1, *_CIFAR10_IMAGE_CHW).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _find_fashion_mnist_idx(directories, looked_at):
    """Read the four Fashion-MNIST IDX files from the first directory that has all of them.

    Returns:
        `(arrays, source)` as `_find_cifar10_binary` does, or `(None, None)`.
    """
    for directory in dict.fromkeys(directories):
        paths, missing = {}, []
        for key, base in _IDX_FILES.items():
            plain = directory / base
            compressed = directory / f"{base}.gz"
            if plain.is_file():
                paths[key] = plain
            elif compressed.is_file():
                paths[key] = compressed
            else:
                missing.append(f"{base}[.gz]")
        if missing:
            looked_at.append(
                f"Fashion-MNIST IDX files in {directory} (missing {', '.join(missing)})"
            )
            continue

        arrays = {}
        for split in ("train", "test"):
            images_path = paths[f"{split}_images"]
            labels_path = paths[f"{split}_labels"]
            images = _read_idx(images_path, ndim=3)[..., np.newaxis]
            labels = _read_idx(labels_path, ndim=1).astype(np.int32)
            if len(images) != len(labels):
                raise ValueError(
                    f"{images_path} has {len(images)} images but {labels_path} has "
                    f"{len(labels)} labels. One of the files is corrupt or from another set."
                )
            _check_labels(labels, 10, labels_path)
            arrays[f"{split}_images"] = images
            arrays[f"{split}_labels"] = labels
        return arrays, str(directory)
    return None, None


def _read_idx(path, ndim):
    """Parse an IDX file of unsigned bytes (the MNIST format), gzipped when named *.gz."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(f"Cannot decompress {path}: {error}. The file is corrupt.") from error

    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise ValueError(f"{path} has {len(data)} bytes, too short for an IDX header.")
    magic = bytes(data[:4])
    if magic != bytes([0, 0, _IDX_UNSIGNED_BYTE, ndim]):
        raise ValueError(
            f"{path} has magic number 0x{magic.hex()}, expected 0x00000{_IDX_UNSIGNED_BYTE:x}"
            f"{ndim:02x} (unsigned bytes, {ndim} dimensions). It is not the expected IDX file."
        )

    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected_bytes = header_bytes + int(np.prod(shape))
    if len(data) != expected_bytes:
        raise ValueError(
            f"{path} has {len(data)} bytes, but its header declares shape {shape} "
            f"({expected_bytes} bytes). The file is corrupt or truncated."
        )
    return np.frombuffer(data, np.uint8, offset=header_bytes).reshape(shape)
