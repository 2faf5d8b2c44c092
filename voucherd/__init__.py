"""voucherd: hands each eligible user a unique voucher code, fast and exactly once."""

__version__ = "0.1.0"
