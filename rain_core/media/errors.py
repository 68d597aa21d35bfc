"""The error of unusable media files, apart from PyAV: the command line catches it in every command,
including those that run where PyAV is not installed (the GPU check on a bare GPU image)."""


class MediaError(ValueError):
    """An input file that cannot be used; the message names the file and the problem."""
