"""tl_multineuron: which MLP neurons a multilingual LLM shares across languages.

A TransformerLens plugin implementing Wang et al. 2024, "Sharing Matters: Analysing Neurons
Across Languages and Tasks in LLMs" (arXiv 2406.09265).
"""

from .analysis import AnalysisConfig, AnalysisResult, analyze
from .classification import (
    CATEGORY_NAMES,
    Categories,
    Category,
    active_mask,
    categorize,
    categorize_acts,
    validate_thresholds,
)
from .data import ParallelDataset, ParallelItem, load_parallel
from .errors import MultiNeuronError
from .evaluation import EvalConfig, accuracy_table, evaluate, generate_greedy
from .models import EMBEDDED_MODEL, LoadInfo, check_model, load_model
from .recording import RecordingConfig, TokenBatch, iter_dataset, record, tokenize
from .statistics import SharingStats, merge_all
from .tasks import TASKS, list_tasks, load_task
from .xnli import load_xnli

__version__ = "0.1.0"

__all__ = [
    "CATEGORY_NAMES",
    "EMBEDDED_MODEL",
    "TASKS",
    "AnalysisConfig",
    "AnalysisResult",
    "Categories",
    "Category",
    "EvalConfig",
    "LoadInfo",
    "MultiNeuronError",
    "ParallelDataset",
    "ParallelItem",
    "RecordingConfig",
    "SharingStats",
    "TokenBatch",
    "accuracy_table",
    "active_mask",
    "analyze",
    "categorize",
    "categorize_acts",
    "check_model",
    "evaluate",
    "generate_greedy",
    "iter_dataset",
    "list_tasks",
    "load_model",
    "load_parallel",
    "load_task",
    "load_xnli",
    "merge_all",
    "record",
    "tokenize",
    "validate_thresholds",
]
