"""The AnySat network: tensors in, tensors out (no data, geo or xarray code here)."""

from anysat_core.model.anysat import AnySat
from anysat_core.model.inputs import OUTPUTS, Output

__all__ = ["OUTPUTS", "AnySat", "Output"]
