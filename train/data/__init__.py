"""Data for joint training: readers for each data set's own on-disk format, the joint label space,
the validation split, and the torch Dataset with training augmentation."""

from train.data.augment import default_pad, random_crop_with_padding, random_hflip, train_transform
from train.data.dataset import ImageListDataset, collate_fill_bad, collate_skip_bad, load_sample_image, make_joint_dataset
from train.data.readers import FORMATS
from train.data.samples import IMAGE_EXTENSIONS, DatasetFormatError, DatasetSplits, DataSpec, Sample
from train.data.spec import build_label_space, check_matches_labels, detect_format, load_dataset, load_datasets, parse_data_spec
from train.data.split import split_validation

__all__ = [
    "collate_fill_bad",
    "check_matches_labels",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "DataSpec",
    "DatasetFormatError",
    "DatasetSplits",
    "ImageListDataset",
    "Sample",
    "build_label_space",
    "collate_skip_bad",
    "default_pad",
    "detect_format",
    "load_dataset",
    "load_datasets",
    "load_sample_image",
    "make_joint_dataset",
    "parse_data_spec",
    "random_crop_with_padding",
    "random_hflip",
    "split_validation",
    "train_transform",
]
