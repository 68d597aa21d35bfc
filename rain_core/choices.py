"""What a user names a model by (its profile and its weights' dtype), and the GPU check's sections.

Free of torch: the command line lists and checks these names before it imports torch, whose
OpenMP threads read their settings once, when torch loads (see `cli.main`).
"""

PROFILE_NAMES = ("official", "tiny", "demo")
DTYPE_NAMES = ("float32", "float16", "bfloat16")
# The sections of `rain-avatar gpu-check`, in the order they run: the most valuable figure first
# (the official profile's eager speed), so that a run cut short has lost the least.
GPU_CHECK_SECTIONS = (
    "profile_eager",
    "matmul_peak",
    "profile_defaults",
    "profile_compiled",
    "profile_cuda_graphs",
    "profile_compiled_cuda_graphs",
    "batched_streams",
    "group_variants",
    "model_worker",
    "steady_memory",
)
