"""The generative story: priors, likelihoods, guide families, networks, the VAE, the
hierarchical VAE and the discrete-latent models (Gaussian-mixture VAE, M2 semi-supervised
VAE, categorical VAE).

Nothing here trains, reads files or plots; see :mod:`pyro_vae.inference` for fitting.
"""

from pyro_vae.models.autoencoder import autoencoder
from pyro_vae.models.bayesian_decoder import BayesianDecoderVAE
from pyro_vae.models.categorical_vae import CategoricalVAE
from pyro_vae.models.class_site import BaselineNetwork
from pyro_vae.models.conditional import ConditionalVAE
from pyro_vae.models.guides import (
    DeltaGuide,
    DiagonalNormalGuide,
    FlowGuide,
    FullRankNormalGuide,
    Guide,
)
from pyro_vae.models.hierarchical import HierarchicalVAE
from pyro_vae.models.likelihoods import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DataSupportError,
    LaplaceLikelihood,
    Likelihood,
    NegativeBinomialLikelihood,
    NormalLikelihood,
    PoissonLikelihood,
    StudentTLikelihood,
)
from pyro_vae.models.mixture_vae import GaussianMixtureVAE
from pyro_vae.models.networks import MLP, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from pyro_vae.models.priors import (
    LaplacePrior,
    LearnedNormalPrior,
    MixtureOfGaussiansPrior,
    Prior,
    StandardNormalPrior,
    StudentTPrior,
    VampPrior,
)
from pyro_vae.models.registry import GUIDES, LIKELIHOODS, PRIORS, register
from pyro_vae.models.semi_supervised import SemiSupervisedVAE
from pyro_vae.models.vae import VAE, check_data_matrix, data_plate

__all__ = [
    "VAE", "autoencoder", "ConditionalVAE", "HierarchicalVAE", "BayesianDecoderVAE", "data_plate",
    "check_data_matrix", "register",
    "PRIORS", "LIKELIHOODS", "GUIDES",
    "Prior", "StandardNormalPrior", "LearnedNormalPrior", "LaplacePrior", "StudentTPrior",
    "MixtureOfGaussiansPrior", "VampPrior",
    "Likelihood", "DataSupportError", "BernoulliLikelihood", "ContinuousBernoulliLikelihood",
    "NormalLikelihood", "LaplaceLikelihood", "StudentTLikelihood", "PoissonLikelihood",
    "NegativeBinomialLikelihood",
    "Guide", "DeltaGuide", "DiagonalNormalGuide", "FullRankNormalGuide", "FlowGuide",
    "MLP", "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder",
    "GaussianMixtureVAE", "SemiSupervisedVAE", "CategoricalVAE", "BaselineNetwork",
]
