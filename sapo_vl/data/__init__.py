"""sapo_vl.data: load, validate and normalise dataset records for training and evaluation.

See ``sapo_vl.data.records`` for the record format, ``load_records`` for file / in-memory sources, and
``sapo_vl.data.registry`` for named datasets (the extension point). data/README.md has the user guide.
"""

from sapo_vl.data.easy_vqa import build_easy_vqa, classify_question
from sapo_vl.data.images import ImageDecodeError, decode_image, decode_images, to_rgb
from sapo_vl.data.records import (
    FieldMap,
    LoadReport,
    RecordError,
    Records,
    check_prompt_length,
    normalize_record,
)
from sapo_vl.data.registry import DATASETS, concat_records, load_dataset_by_name, register_dataset
from sapo_vl.data.sources import image_to_data_uri, load_records, write_jsonl, write_parquet
from sapo_vl.data.synthetic import ShapesConfig, build_synthetic_shapes

__all__ = [
    "DATASETS",
    "FieldMap",
    "ImageDecodeError",
    "LoadReport",
    "RecordError",
    "Records",
    "ShapesConfig",
    "build_easy_vqa",
    "build_synthetic_shapes",
    "check_prompt_length",
    "classify_question",
    "concat_records",
    "decode_image",
    "decode_images",
    "image_to_data_uri",
    "load_dataset_by_name",
    "load_records",
    "normalize_record",
    "register_dataset",
    "to_rgb",
    "write_jsonl",
    "write_parquet",
]
