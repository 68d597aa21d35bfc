"""What a user names a model by (its profile and its weights' dtype), and the GPU check's sections.

Free of torch: the command line lists and checks these names before it imports torch, whose
OpenMP threads read their settings once, when torch loads (see `cli.main`).
"""

PROFILE_NAMES = ("official", "tiny", "demo")
DTYPE_NAMES = ("float32", "float16", "bfloat16")
# The sections of `rain-avatar gpu-check`, in the order they run (steady memory last: it takes
# whatever is left of the time budget).
GPU_CHECK_SECTIONS = (
    "matmul_peak",
    "profile_eager",
    "profile_compiled",
    "profile_cuda_graphs",
    "profile_compiled_cuda_graphs",
    "batched_streams",
    "group_variants",
    "model_worker",
    "steady_memory",
)
