"""``cifarlab bench``: how fast the study trains on this machine, and why.

Six sections, each on the same synthetic data, models and machine, with repeats
interleaved between the things compared (so a slow moment of the machine hits all of
them) and reported as median and best:

``loops``      our training step (``train_epoch``: in-memory normalised tensors, fused
               AdamW) against a course-style loop (numpy uint8 array, per-batch numpy
               slicing and normalisation, ``torch.from_numpy``, default AdamW, ``.item()``
               per step) and a torchvision-style loop (per-sample PIL image ->
               ``Compose([ToTensor(), Normalize()])`` -> ``DataLoader``), MLP and CNN.
``layers``     the hand-written BatchNorm/Dropout against torch's fused layers inside the
               study's MLP and CNN: forward, backward and whole-step time, overhead in %.
``peak``       achieved GFLOP/s of a training step (FLOPs from ``FlopCounterMode``) as a
               fraction of a large fp32 GEMM and of the CNN's own conv2 forward; 1 thread
               and all threads.
``jobs``       1 job x N threads against N jobs x 1 thread (and N x N, oversubscribed):
               real processes running MLP steps for a fixed time; total images/s.
``precision``  bf16 autocast against fp32: speed, and test accuracy after a short run on
               a learnable synthetic data set (fp32, bf16 and the fast path: bf16,
               compiled and, on CUDA, CUDA graphs).
``engines``    the same steps eager, through torch.compile, replayed from a CUDA graph and
               both (the latter two on CUDA only): µs per step, images/s, first-call
               seconds (compilation, capture), at batch 100 and the grid's batch 5.

Results: ``bench.csv`` (long: section, case, metric, median, best, n), ``bench.json``
(the same numbers, targets, settings and machine info) and a table on stdout.

Modules: ``measure`` (``measure_interleaved``, the one warm-up / interleave / summarise
loop every timed section goes through; device sync and machine probes), ``results``
(statistics, rows, files, table), ``settings`` (presets), ``workload`` (synthetic data and
our training step), one module per section, and ``run`` (the driver). Networks are built
through the model registry (``cifarlab.models.build_model``).
"""

from .engines import ENGINES, bench_engines
from .jobs import GPU_SHARES, bench_jobs
from .layers import bench_layers, torch_layer_twin
from .loops import CourseLoop, TorchvisionLoop, bench_loops
from .measure import measure_interleaved
from .peak import bench_peak
from .precision import bench_precision
from .results import CSV_COLUMNS, Results, Stat, ratio, summarize
from .run import SECTIONS, run_bench
from .settings import BenchSettings, settings_for
from .workload import OursLoop, synthetic_data

__all__ = ["SECTIONS", "Stat", "BenchSettings", "Results", "summarize", "ratio", "settings_for",
           "run_bench", "bench_loops", "bench_layers", "bench_peak", "bench_jobs",
           "bench_precision", "bench_engines", "ENGINES", "torch_layer_twin", "synthetic_data",
           "CourseLoop", "TorchvisionLoop", "OursLoop", "CSV_COLUMNS", "GPU_SHARES",
           "measure_interleaved"]
