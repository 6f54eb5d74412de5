"""Data stage: readers for real formats, filtering, leave-one-out split, cached `Dataset`."""

from sidrec.data.dataset import Dataset, build_dataset, k_core
from sidrec.data.readers import DataFormatError, RawData
from sidrec.data.registry import DATASETS, load_dataset

__all__ = ["DATASETS", "DataFormatError", "Dataset", "RawData", "build_dataset", "k_core", "load_dataset"]
