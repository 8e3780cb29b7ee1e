"""Datasets: ImageFolder, CSV manifests, Waterbirds metadata and the generated demo, as one table."""

from .imagefolder import read_imagefolder
from .images import ImageTensorDataset, check_image, load_mask, load_rgb, to_tensor
from .manifest import read_manifest, read_waterbirds
from .table import DatasetError, ImageTable
