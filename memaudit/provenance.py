"""What every report records about the software and the model it measured (shared by the scan,
recovery and the data evidence, so none of them imports another for it)."""
from __future__ import annotations

import platform

import numpy as np
import torch

from . import __version__
from .denoiser import Denoiser
from .io import finite_json


def model_provenance(denoiser: Denoiser) -> dict:
    """What every report records about the model: a JSON-safe copy of denoiser.describe() (it may
    hold Paths or numpy scalars; objects of no JSON type become strings)."""
    return finite_json(denoiser.describe(), default=str)


# The version of the report files' layout (docs/report-schema.md, "Schema versions"): raised
# whenever a file, column or field is added, removed or changes meaning. Reports without it are 1.
SCHEMA_VERSION = 2


def software_versions() -> dict:
    """The versions every report's provenance records (report schema, memaudit, torch, numpy, Python)."""
    return {"schema_version": SCHEMA_VERSION, "memaudit_version": __version__, "torch_version": torch.__version__, "numpy_version": np.__version__,
            "python_version": platform.python_version()}
