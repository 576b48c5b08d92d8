"""Errors a user's data can cause, each with a message that names the file and what is wrong in it."""

from __future__ import annotations


class AnnotationError(ValueError):
    """An annotation file that is not JSON, or whose entries lack keys or have wrong types or empty texts; the
    message names the file and the first bad entry."""


class MissingImagesError(FileNotFoundError):
    """Images that an annotation file names but that are not on disk; the message says how many, with examples."""


class UnreadableImagesError(ValueError):
    """More of a training set's images failed to load than the run allows; the message says how many and how to
    list them."""
