"""Errors a user can act on: each message names the problem and the fix."""


class QRLoRAError(Exception):
    """Base class for every error qr_core raises on purpose."""


class SettingError(QRLoRAError, ValueError):
    """An argument or setting is not one qr_core accepts (unknown option, out of range, missing input).

    Also a ValueError, so code that validates its own inputs that way keeps catching it.
    """


class AdapterStateError(QRLoRAError):
    """An adapter is used out of order (attached twice)."""


class TargetError(QRLoRAError):
    """The target set cannot be built (unknown architecture, empty set, bad rank)."""


class BasisMismatchError(QRLoRAError):
    """A ΔR, basis or cache entry does not belong to the model or basis it is used with."""


class DeltaFileError(QRLoRAError):
    """A ΔR or basis file is missing, truncated, not safetensors or not a QR-LoRA file."""


class NonFiniteLossError(QRLoRAError):
    """Training produced a NaN or infinite loss; the last good ΔR was kept."""

    def __init__(self, message: str, step: int, last_good_step: int):
        super().__init__(message)
        self.step = step
        self.last_good_step = last_good_step


class RuntimeSupportError(QRLoRAError):
    """The runtime cannot run what was asked on this model (e.g. weight hooks under dynamic VRAM); the message names the way out."""


class ProcessGroupError(QRLoRAError):
    """A data-parallel run lost one of its processes (it stopped or died); the last whole snapshot stays."""
