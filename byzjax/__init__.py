"""byzjax: a JAX simulator for Byzantine-robust distributed optimization.

The public API: every aggregation rule, pre-aggregator, attack, algorithm and problem, the round
oracle, data loading, and ``run`` / ``run_grid`` (``from byzjax import TrMean, RobustOracle, run``).
The application layer (config files, result files, figures, the command line) is ``byzjax.app``.
"""

__version__ = "0.1.0"

from byzjax._validation import ConfigError
from byzjax.aggregators import (
    CAF, MDA, SMEA, AbstractAggregator, AdaptiveClipping, Average, Bulyan, CenteredClipping, ClippedClustering, DnC, FLTrust,
    GeometricMedian, HuberMean, Krum, Meamed, Median, MoNNA, MultiKrum, SignGuard, SmoothedWeiszfeld, TrMean,
)
from byzjax.algorithms import AEG, DGD, DNAG, PIGS, AbstractAlgorithm, Environment, FedAvg
from byzjax.attacks import (
    AbstractAttack, AbstractCopyAttack, AbstractPerWorkerAttack, AttackerView, ALittleIsEnough, Fang, Gaussian, Inf, InnerProductManipulation, LabelFlipping, Mimic,
    MimicHeuristic, MinMax, MinSum, NoAttack, Optimal_ALittleIsEnough, Optimal_InnerProductManipulation, SignFlipping,
)
from byzjax.data import FederatedData, federated_classification, load_dataset, synthetic_dataset
from byzjax.oracle import RobustOracle
from byzjax.preaggregators import ARC, NNM, AbstractPreAggregator, Bucketing, Clipping, Pipeline
from byzjax.models import MODELS
from byzjax.networks import NetworkClassification, network_problem
from byzjax.problems import AbstractProblem, LogisticRegression, Quadratic, make_quadratic
from byzjax.robustness import empirical_kappa
from byzjax.simulate import Experiment, Trace, run
from byzjax.sweep import run_grid

__all__ = [
    "__version__", "ConfigError",
    "AbstractAggregator", "Average", "Median", "TrMean", "Meamed", "GeometricMedian", "SmoothedWeiszfeld",
    "CenteredClipping", "HuberMean", "AdaptiveClipping", "FLTrust", "Krum", "MultiKrum", "MoNNA", "Bulyan", "MDA", "SMEA", "CAF", "DnC",
    "SignGuard", "ClippedClustering",
    "AbstractPreAggregator", "NNM", "Bucketing", "Clipping", "ARC", "Pipeline",
    "AbstractAttack", "AbstractCopyAttack", "AbstractPerWorkerAttack", "AttackerView", "NoAttack", "SignFlipping", "InnerProductManipulation", "ALittleIsEnough", "Mimic",
    "MimicHeuristic", "Inf", "Gaussian", "LabelFlipping", "Fang", "MinMax", "MinSum",
    "Optimal_InnerProductManipulation", "Optimal_ALittleIsEnough",
    "AbstractAlgorithm", "Environment", "DGD", "DNAG", "PIGS", "AEG", "FedAvg",
    "AbstractProblem", "LogisticRegression", "Quadratic", "make_quadratic", "MODELS", "NetworkClassification",
    "network_problem",
    "FederatedData", "federated_classification", "load_dataset", "synthetic_dataset",
    "RobustOracle", "Experiment", "Trace", "run", "run_grid", "empirical_kappa",
]
