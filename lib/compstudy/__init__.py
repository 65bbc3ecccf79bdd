"""compstudy: the library behind the reproducible neural-network compression study.

The notebooks under ``notebooks/`` stay thin and call into this package: verified external
files (:mod:`compstudy.assets`), real and synthetic targets (:mod:`compstudy.data`), the
ImageNet upstream models and the CIFAR networks (:mod:`compstudy.models`), one training loop
(:mod:`compstudy.train`), the algorithms of the four papers (:mod:`compstudy.methods`), each
notebook's study (:mod:`compstudy.studies`), metrics (:mod:`compstudy.metrics`), typed
configuration (:mod:`compstudy.config`), the papermill runner (:mod:`compstudy.runner`), plots
(:mod:`compstudy.plots`) and the claims engine that gives every claim an effect, a 95 % CI and
a verdict (:mod:`compstudy.claims`).
"""

import logging
import os
import warnings

__version__ = "0.1.0"

# Two import-time messages that say nothing about a run, silenced here at their source, before
# any compstudy module imports torch or timm:
# - torch.utils.cpp_extension (imported by torch.utils.benchmark) warns "No CUDA runtime is
#   found" on machines that have nvcc but no GPU; compstudy never builds extensions;
# - tqdm.auto (imported by huggingface_hub through timm) warns that ipywidgets is missing in
#   every notebook kernel; the study keeps widgets out on purpose (its pages read offline).
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm.auto")

# numpy's and scipy's OpenBLAS run one thread: ``seeding.seed_everything`` limits the ones
# already loaded, this the ones loaded later (the variable is read when a BLAS loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
