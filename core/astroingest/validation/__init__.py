"""Streaming validators: each judges one body, chunk by chunk, in bounded memory."""

from astroingest.validation._base import (
    Check,
    QualityReport,
    Validator,
    ValidatorType,
    report,
    score,
)
from astroingest.validation._select import choose
from astroingest.validation.builtin import BUILTIN_VALIDATORS

__all__ = [
    "BUILTIN_VALIDATORS",
    "Check",
    "QualityReport",
    "Validator",
    "ValidatorType",
    "choose",
    "report",
    "score",
]
