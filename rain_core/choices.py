"""What a user names a model by: its profile and its weights' dtype.

Free of torch: the command line lists and checks these names before it imports torch, whose
OpenMP threads read their settings once, when torch loads (see `cli.main`).
"""

PROFILE_NAMES = ("official", "tiny", "demo")
DTYPE_NAMES = ("float32", "float16", "bfloat16")
