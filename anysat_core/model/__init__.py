"""The AnySat network: tensors in, tensors out (no data, geo or xarray code here)."""

from anysat_core.model.anysat import AnySat
from anysat_core.model.attention import set_fused_attention
from anysat_core.model.inputs import OUTPUTS

__all__ = ["OUTPUTS", "AnySat", "set_fused_attention"]
