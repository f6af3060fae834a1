"""Data: sources (arrays from tfds / local files / generated), the in-memory jitted pipeline,
and per-host streaming for sets too large to hold (ImageNet).

`streaming` imports on demand: `from superconv.data import streaming`.
"""

from superconv.data import pipeline
from superconv.data import sources
from superconv.data.pipeline import InMemoryData
from superconv.data.pipeline import load
from superconv.data.sources import DataError
from superconv.data.sources import image_shape
from superconv.data.sources import load_split
from superconv.data.sources import num_classes

__all__ = ['pipeline', 'sources', 'InMemoryData', 'load', 'DataError', 'image_shape',
           'load_split', 'num_classes']
