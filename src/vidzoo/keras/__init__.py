"""Import Keras HDF5 (``.h5``) models, e.g. the Moments in Time model zoo, as vidzoo models.

>>> from vidzoo.keras import load_h5
>>> model = load_h5("C3D-16x224x224x3-339-m.h5", classes="mit-v1")
>>> probs = model.predict_proba(clips)          # what Keras' predict gives; model(clips) = logits

Read with h5py and JSON only: Keras is not imported and nothing from the file is executed.
"""

from vidzoo.keras.h5file import KerasImportError, read_keras_file
from vidzoo.keras.importer import (
           MIT_V1,
           import_h5,
           import_summary,
           load_h5,
           resolve_classes,
)
from vidzoo.keras.layers import KerasWeightError
from vidzoo.keras.model import KerasModel

__all__ = ["KerasImportError", "KerasModel", "KerasWeightError", "MIT_V1", "import_h5", "import_summary", "load_h5",
           "read_keras_file", "resolve_classes"]
