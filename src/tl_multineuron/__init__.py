"""tl_multineuron: which MLP neurons a multilingual LLM shares across languages.

A TransformerLens plugin implementing Wang et al. 2024, "Sharing Matters: Analysing Neurons
Across Languages and Tasks in LLMs" (arXiv 2406.09265).
"""

from .accumulator import Accumulator
from .analysis import AnalysisConfig, AnalysisResult, analyze
from .answers import AnswerBoundaryWarning, boundary_findings, continuation
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
from .devices import available_devices, resolve_device
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
    Edit,
    Intervention,
    NeuronHook,
    amplify,
    apply,
    deactivate,
    mean_ablate,
    steer_toward,
)
from .knowledge import KnowledgeNeurons, KnowledgeStats, coarse_neurons, knowledge_neurons, refine
from .language_id import LanguageIdentifier, identifier_accuracy
from .language_runs import LanguageSteerConfig, run_language_study
from .language_steering import ResidualAdd, control_table, diff_of_means, language_edit
from .masks import topk_mask
from .memory import MemoryEstimate, estimate_forward, memory_budget, parse_memory
from .merge import merge_shards
from .models import (
    EMBEDDED_MODEL,
    SUPPORTED_MODELS,
    LoadInfo,
    check_model,
    load_model,
)
from .neuron_sets import NeuronSet, magnitude_strata, sample_like
from .norms import NormPath, NormSpec, norm_path
from .pipelines import run_analysis, run_attribution, write_item_views
from .placement import layer_device_map
from .recording import (
    RecordingConfig,
    TokenBatch,
    iter_dataset,
    iter_dataset_with,
    record,
    record_with,
    tokenize,
)
from .saes import attach_sae, load_sae, sae_site
from .scoring import (
    AnswerRows,
    AnswerScores,
    answer_rows,
    prefix_cache_status,
    score_answers,
    scoring_path,
)
from .shards import Shard
from .sites import edit_hook, gate_activation, is_feature_site
from .statistics import SharingStats, merge_all
from .steer_runs import AccuracySteerConfig, run_accuracy_study
from .steering import SteerConfig, SteeringSets, default_bands, search_space
from .steering_study import choose, heldout_comparisons, score_steering, search_surface
from .tasks import TASKS, list_tasks, load_task
from .tl_compat import check_tl_version, native_kind, tl_version
from .versions import drift_line, version_drift, versions_line
from .weights import ModelWeights, model_weights
from .xnli import load_xnli

__version__ = "0.1.0"

__all__ = [
    "Accumulator",
    "accuracy_summary",
    "accuracy_table",
    "AccuracySteerConfig",
    "active_mask",
    "amplify",
    "AnalysisConfig",
    "AnalysisResult",
    "analyze",
    "answer_rows",
    "AnswerBoundaryWarning",
    "boundary_findings",
    "continuation",
    "prefix_cache_status",
    "scoring_path",
    "drift_line",
    "version_drift",
    "versions_line",
    "answer_token_ids",
    "AnswerRows",
    "AnswerScores",
    "apply",
    "attach_sae",
    "attention_implementation",
    "attribute",
    "AttributionConfig",
    "AttributionResult",
    "AttributionStats",
    "available_devices",
    "Categories",
    "categorize",
    "categorize_acts",
    "Category",
    "CATEGORY_NAMES",
    "check_model",
    "check_tl_version",
    "choose",
    "coarse_neurons",
    "Composite",
    "Condition",
    "contribution_scores",
    "control_table",
    "deactivate",
    "default_bands",
    "diff_of_means",
    "Edit",
    "edit_hook",
    "effective_scores",
    "efficient_attention",
    "EMBEDDED_MODEL",
    "estimate_forward",
    "EvalConfig",
    "evaluate",
    "ExperimentScores",
    "ExperimentSets",
    "gate_activation",
    "generate_greedy",
    "GridConfig",
    "heldout_comparisons",
    "identifier_accuracy",
    "IGResult",
    "integrated_gradients",
    "Intervention",
    "is_feature_site",
    "iter_dataset",
    "iter_dataset_with",
    "knowledge_neurons",
    "KnowledgeNeurons",
    "KnowledgeStats",
    "language_edit",
    "LanguageIdentifier",
    "LanguageSteerConfig",
    "layer_device_map",
    "list_tasks",
    "load_model",
    "load_parallel",
    "load_sae",
    "load_task",
    "load_xnli",
    "LoadInfo",
    "magnitude_strata",
    "mcnemar_exact",
    "mean_ablate",
    "memory_budget",
    "MemoryEstimate",
    "merge_all",
    "merge_shards",
    "run_analysis",
    "run_attribution",
    "write_item_views",
    "model_weights",
    "ModelWeights",
    "MultiNeuronError",
    "native_kind",
    "NeuronHook",
    "NeuronSet",
    "norm_path",
    "NormPath",
    "NormSpec",
    "paired_bootstrap",
    "paired_comparisons",
    "paper_conditions",
    "ParallelDataset",
    "ParallelItem",
    "parse_memory",
    "prepare_sets",
    "record",
    "record_with",
    "RecordingConfig",
    "refine",
    "ResidualAdd",
    "resolve_device",
    "run_accuracy_study",
    "run_experiment",
    "run_language_study",
    "run_task",
    "sae_site",
    "sample_like",
    "score_answers",
    "score_steering",
    "ScoreStats",
    "search_space",
    "search_surface",
    "Shard",
    "SharingStats",
    "steer_toward",
    "SteerConfig",
    "SteeringSets",
    "SUPPORTED_MODELS",
    "TASKS",
    "tl_version",
    "TokenBatch",
    "tokenize",
    "topk_mask",
    "validate_thresholds",
]
