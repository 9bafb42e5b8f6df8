"""sapo_vl.data: every read and every normalisation of dataset records, for training and evaluation.

``readers.open_rows`` reads raw rows from any source, ``load_records`` normalises them (``records``), the
``DATASETS`` registry names datasets (the extension point), and ``mixture`` samples several of them by weight.
data/README.md has the user guide.
"""

from sapo_vl.data.easy_vqa import build_easy_vqa, classify_question
from sapo_vl.data.images import ImageDecodeError, decode_image, decode_images, resolve_image, to_rgb
from sapo_vl.data.readers import Rows, open_rows
from sapo_vl.data.records import (
    FieldMap,
    LoadReport,
    RecordError,
    Records,
    RecordSpec,
    check_prompt_length,
    normalize_record,
    render_template,
)
from sapo_vl.data.registry import DATASETS, load_dataset_by_name, register_dataset
from sapo_vl.data.sources import image_to_data_uri, load_records, write_jsonl, write_parquet
from sapo_vl.data.synthetic import ShapesConfig, build_synthetic_shapes, build_synthetic_shapes_colors

__all__ = [
    "DATASETS",
    "FieldMap",
    "ImageDecodeError",
    "LoadReport",
    "RecordError",
    "RecordSpec",
    "Records",
    "Rows",
    "ShapesConfig",
    "build_easy_vqa",
    "build_synthetic_shapes",
    "build_synthetic_shapes_colors",
    "check_prompt_length",
    "classify_question",
    "decode_image",
    "decode_images",
    "image_to_data_uri",
    "load_dataset_by_name",
    "load_records",
    "normalize_record",
    "open_rows",
    "register_dataset",
    "render_template",
    "resolve_image",
    "to_rgb",
    "write_jsonl",
    "write_parquet",
]
