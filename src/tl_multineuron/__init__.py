"""tl_multineuron: which MLP neurons a multilingual LLM shares across languages.

A TransformerLens plugin implementing Wang et al. 2024, "Sharing Matters: Analysing Neurons
Across Languages and Tasks in LLMs" (arXiv 2406.09265).

The public API below is loaded lazily (PEP 562): ``import tl_multineuron`` imports no module of
the package (and so neither torch nor TransformerLens); each name imports its module on first
use. Submodules are reachable as attributes too (``tl_multineuron.recording``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module (in this package) that defines it
_EXPORTS: dict[str, str] = {
    "Accumulator": "accumulator",
    "AnalysisConfig": "analysis",
    "AnalysisResult": "analysis",
    "analyze": "analysis",
    "AnswerBoundaryWarning": "answers",
    "boundary_findings": "answers",
    "continuation": "answers",
    "attention_implementation": "attention",
    "efficient_attention": "attention",
    "answer_token_ids": "attribution",
    "contribution_scores": "attribution",
    "effective_scores": "attribution",
    "IGResult": "attribution",
    "integrated_gradients": "attribution",
    "attribute": "attribution_analysis",
    "AttributionConfig": "attribution_analysis",
    "AttributionResult": "attribution_analysis",
    "AttributionStats": "attribution_stats",
    "ScoreStats": "attribution_stats",
    "active_mask": "classification",
    "Categories": "classification",
    "categorize": "classification",
    "categorize_acts": "classification",
    "Category": "classification",
    "CATEGORY_NAMES": "classification",
    "validate_thresholds": "classification",
    "mcnemar_exact": "comparisons",
    "paired_bootstrap": "comparisons",
    "paired_comparisons": "comparisons",
    "load_parallel": "data",
    "ParallelDataset": "data",
    "ParallelItem": "data",
    "available_devices": "devices",
    "resolve_device": "devices",
    "MultiNeuronError": "errors",
    "accuracy_table": "evaluation",
    "EvalConfig": "evaluation",
    "evaluate": "evaluation",
    "generate_greedy": "evaluation",
    "ExperimentScores": "experiment_scores",
    "accuracy_summary": "experiments",
    "Condition": "experiments",
    "ExperimentSets": "experiments",
    "paper_conditions": "experiments",
    "prepare_sets": "experiments",
    "run_experiment": "experiments",
    "GridConfig": "grid",
    "run_task": "grid",
    "amplify": "interventions",
    "apply": "interventions",
    "Composite": "interventions",
    "deactivate": "interventions",
    "Edit": "interventions",
    "Intervention": "interventions",
    "mean_ablate": "interventions",
    "NeuronHook": "interventions",
    "steer_toward": "interventions",
    "coarse_neurons": "knowledge",
    "knowledge_neurons": "knowledge",
    "KnowledgeNeurons": "knowledge",
    "KnowledgeStats": "knowledge",
    "refine": "knowledge",
    "identifier_accuracy": "language_id",
    "LanguageIdentifier": "language_id",
    "LanguageSteerConfig": "language_runs",
    "run_language_study": "language_runs",
    "control_table": "language_steering",
    "diff_of_means": "language_steering",
    "language_edit": "language_steering",
    "ResidualAdd": "language_steering",
    "topk_mask": "masks",
    "estimate_forward": "memory",
    "memory_budget": "memory",
    "MemoryEstimate": "memory",
    "parse_memory": "memory",
    "merge_shards": "merge",
    "check_model": "models",
    "EMBEDDED_MODEL": "models",
    "load_model": "models",
    "LoadInfo": "models",
    "SUPPORTED_MODELS": "models",
    "magnitude_strata": "neuron_sets",
    "NeuronSet": "neuron_sets",
    "sample_like": "neuron_sets",
    "norm_path": "norms",
    "NormPath": "norms",
    "NormSpec": "norms",
    "run_analysis": "pipelines",
    "run_attribution": "pipelines",
    "write_item_views": "pipelines",
    "layer_device_map": "placement",
    "iter_dataset": "recording",
    "iter_dataset_with": "recording",
    "record": "recording",
    "record_with": "recording",
    "RecordingConfig": "recording",
    "TokenBatch": "recording",
    "tokenize": "recording",
    "load_item_categories": "runs",
    "attach_sae": "saes",
    "load_sae": "saes",
    "sae_site": "saes",
    "answer_rows": "scoring",
    "AnswerRows": "scoring",
    "AnswerScores": "scoring",
    "prefix_cache_status": "scoring",
    "score_answers": "scoring",
    "scoring_path": "scoring",
    "Shard": "shards",
    "edit_hook": "sites",
    "gate_activation": "sites",
    "is_feature_site": "sites",
    "merge_all": "statistics",
    "SharingStats": "statistics",
    "AccuracySteerConfig": "steer_runs",
    "run_accuracy_study": "steer_runs",
    "default_bands": "steering",
    "search_space": "steering",
    "SteerConfig": "steering",
    "SteeringSets": "steering",
    "choose": "steering_study",
    "heldout_comparisons": "steering_study",
    "score_steering": "steering_study",
    "search_surface": "steering_study",
    "list_tasks": "tasks",
    "load_task": "tasks",
    "TASKS": "tasks",
    "check_tl_version": "tl_compat",
    "native_kind": "tl_compat",
    "tl_version": "tl_compat",
    "drift_line": "versions",
    "version_drift": "versions",
    "versions_line": "versions",
    "model_weights": "weights",
    "ModelWeights": "weights",
    "load_xnli": "xnli",
}

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
    "answer_token_ids",
    "AnswerBoundaryWarning",
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
    "boundary_findings",
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
    "continuation",
    "contribution_scores",
    "control_table",
    "deactivate",
    "default_bands",
    "diff_of_means",
    "drift_line",
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
    "load_item_categories",
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
    "prefix_cache_status",
    "prepare_sets",
    "record",
    "record_with",
    "RecordingConfig",
    "refine",
    "ResidualAdd",
    "resolve_device",
    "run_accuracy_study",
    "run_analysis",
    "run_attribution",
    "run_experiment",
    "run_language_study",
    "run_task",
    "sae_site",
    "sample_like",
    "score_answers",
    "score_steering",
    "ScoreStats",
    "scoring_path",
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
    "version_drift",
    "versions_line",
    "write_item_views",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time names load on first use
    from .accumulator import (
        Accumulator,
    )
    from .analysis import (
        AnalysisConfig,
        AnalysisResult,
        analyze,
    )
    from .answers import (
        AnswerBoundaryWarning,
        boundary_findings,
        continuation,
    )
    from .attention import (
        attention_implementation,
        efficient_attention,
    )
    from .attribution import (
        IGResult,
        answer_token_ids,
        contribution_scores,
        effective_scores,
        integrated_gradients,
    )
    from .attribution_analysis import (
        AttributionConfig,
        AttributionResult,
        attribute,
    )
    from .attribution_stats import (
        AttributionStats,
        ScoreStats,
    )
    from .classification import (
        CATEGORY_NAMES,
        Categories,
        Category,
        active_mask,
        categorize,
        categorize_acts,
        validate_thresholds,
    )
    from .comparisons import (
        mcnemar_exact,
        paired_bootstrap,
        paired_comparisons,
    )
    from .data import (
        ParallelDataset,
        ParallelItem,
        load_parallel,
    )
    from .devices import (
        available_devices,
        resolve_device,
    )
    from .errors import (
        MultiNeuronError,
    )
    from .evaluation import (
        EvalConfig,
        accuracy_table,
        evaluate,
        generate_greedy,
    )
    from .experiment_scores import (
        ExperimentScores,
    )
    from .experiments import (
        Condition,
        ExperimentSets,
        accuracy_summary,
        paper_conditions,
        prepare_sets,
        run_experiment,
    )
    from .grid import (
        GridConfig,
        run_task,
    )
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
    from .knowledge import (
        KnowledgeNeurons,
        KnowledgeStats,
        coarse_neurons,
        knowledge_neurons,
        refine,
    )
    from .language_id import (
        LanguageIdentifier,
        identifier_accuracy,
    )
    from .language_runs import (
        LanguageSteerConfig,
        run_language_study,
    )
    from .language_steering import (
        ResidualAdd,
        control_table,
        diff_of_means,
        language_edit,
    )
    from .masks import (
        topk_mask,
    )
    from .memory import (
        MemoryEstimate,
        estimate_forward,
        memory_budget,
        parse_memory,
    )
    from .merge import (
        merge_shards,
    )
    from .models import (
        EMBEDDED_MODEL,
        SUPPORTED_MODELS,
        LoadInfo,
        check_model,
        load_model,
    )
    from .neuron_sets import (
        NeuronSet,
        magnitude_strata,
        sample_like,
    )
    from .norms import (
        NormPath,
        NormSpec,
        norm_path,
    )
    from .pipelines import (
        run_analysis,
        run_attribution,
        write_item_views,
    )
    from .placement import (
        layer_device_map,
    )
    from .recording import (
        RecordingConfig,
        TokenBatch,
        iter_dataset,
        iter_dataset_with,
        record,
        record_with,
        tokenize,
    )
    from .runs import (
        load_item_categories,
    )
    from .saes import (
        attach_sae,
        load_sae,
        sae_site,
    )
    from .scoring import (
        AnswerRows,
        AnswerScores,
        answer_rows,
        prefix_cache_status,
        score_answers,
        scoring_path,
    )
    from .shards import (
        Shard,
    )
    from .sites import (
        edit_hook,
        gate_activation,
        is_feature_site,
    )
    from .statistics import (
        SharingStats,
        merge_all,
    )
    from .steer_runs import (
        AccuracySteerConfig,
        run_accuracy_study,
    )
    from .steering import (
        SteerConfig,
        SteeringSets,
        default_bands,
        search_space,
    )
    from .steering_study import (
        choose,
        heldout_comparisons,
        score_steering,
        search_surface,
    )
    from .tasks import (
        TASKS,
        list_tasks,
        load_task,
    )
    from .tl_compat import (
        check_tl_version,
        native_kind,
        tl_version,
    )
    from .versions import (
        drift_line,
        version_drift,
        versions_line,
    )
    from .weights import (
        ModelWeights,
        model_weights,
    )
    from .xnli import (
        load_xnli,
    )
