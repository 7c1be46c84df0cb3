"""VMamba written in pure PyTorch (no package provides it); see :mod:`.model` and :mod:`.scan`."""

from clearct.encoders.vmamba.model import VMamba, vmamba_test, vmamba_tiny
from clearct.encoders.vmamba.scan import cross_merge, cross_scan, selective_scan

__all__ = ["VMamba", "cross_merge", "cross_scan", "selective_scan", "vmamba_test", "vmamba_tiny"]
