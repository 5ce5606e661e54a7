"""tl_multineuron: which MLP neurons a multilingual LLM shares across languages.

A TransformerLens plugin implementing Wang et al. 2024, "Sharing Matters: Analysing Neurons
Across Languages and Tasks in LLMs" (arXiv 2406.09265).
"""

from .accumulator import Accumulator
from .analysis import AnalysisConfig, AnalysisResult, analyze
from .attention import attention_implementation, efficient_attention
from .attribution import (
    IGResult,
    answer_token_ids,
    contribution_scores,
    effective_scores,
    integrated_gradients,
)
from .attribution_analysis import AttributionConfig, AttributionResult, attribute
from .attribution_stats import AttributionStats, ScoreStats
from .classification import (
    CATEGORY_NAMES,
    Categories,
    Category,
    active_mask,
    categorize,
    categorize_acts,
    validate_thresholds,
)
from .comparisons import mcnemar_exact, paired_bootstrap, paired_comparisons
from .data import ParallelDataset, ParallelItem, load_parallel
from .errors import MultiNeuronError
from .evaluation import EvalConfig, accuracy_table, evaluate, generate_greedy
from .experiment_scores import ExperimentScores
from .experiments import (
    Condition,
    ExperimentSets,
    accuracy_summary,
    paper_conditions,
    prepare_sets,
    run_experiment,
)
from .grid import GridConfig, run_task
from .interventions import (
    Composite,
    Intervention,
    NeuronHook,
    amplify,
    apply,
    deactivate,
    mean_ablate,
    steer_toward,
)
from .masks import topk_mask
from .memory import MemoryEstimate, estimate_forward, memory_budget, parse_memory
from .models import (
    EMBEDDED_MODEL,
    LoadInfo,
    available_devices,
    check_model,
    load_model,
    resolve_device,
)
from .neuron_sets import NeuronSet, magnitude_strata, sample_like
from .recording import RecordingConfig, TokenBatch, iter_dataset, record, tokenize
from .scoring import AnswerRows, AnswerScores, answer_rows, score_answers
from .statistics import SharingStats, merge_all
from .tasks import TASKS, list_tasks, load_task
from .weights import ModelWeights, model_weights
from .xnli import load_xnli

__version__ = "0.1.0"

__all__ = [
    "Accumulator",
    "ExperimentScores",
    "attention_implementation",
    "efficient_attention",
    "MemoryEstimate",
    "estimate_forward",
    "memory_budget",
    "parse_memory",
    "available_devices",
    "resolve_device",
    "CATEGORY_NAMES",
    "EMBEDDED_MODEL",
    "TASKS",
    "AnalysisConfig",
    "AnalysisResult",
    "AnswerRows",
    "AnswerScores",
    "AttributionConfig",
    "AttributionResult",
    "AttributionStats",
    "Categories",
    "Category",
    "Composite",
    "Condition",
    "EvalConfig",
    "ExperimentSets",
    "GridConfig",
    "IGResult",
    "Intervention",
    "LoadInfo",
    "ModelWeights",
    "MultiNeuronError",
    "NeuronHook",
    "NeuronSet",
    "ParallelDataset",
    "ParallelItem",
    "RecordingConfig",
    "ScoreStats",
    "SharingStats",
    "TokenBatch",
    "accuracy_summary",
    "accuracy_table",
    "active_mask",
    "amplify",
    "analyze",
    "answer_rows",
    "answer_token_ids",
    "apply",
    "attribute",
    "categorize",
    "categorize_acts",
    "check_model",
    "contribution_scores",
    "deactivate",
    "effective_scores",
    "evaluate",
    "generate_greedy",
    "integrated_gradients",
    "iter_dataset",
    "list_tasks",
    "load_model",
    "load_parallel",
    "load_task",
    "load_xnli",
    "magnitude_strata",
    "mcnemar_exact",
    "mean_ablate",
    "merge_all",
    "model_weights",
    "paired_bootstrap",
    "paired_comparisons",
    "paper_conditions",
    "prepare_sets",
    "record",
    "run_experiment",
    "run_task",
    "sample_like",
    "score_answers",
    "steer_toward",
    "tokenize",
    "topk_mask",
    "validate_thresholds",
]
