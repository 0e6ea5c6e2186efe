"""The unconditional code prior p(c): masked (absorbing-state) discrete diffusion over the L code
positions (``dlc train prior``, ``python train/prior.py``).

    prior = CodePrior.from_pretrained("runs/emoji/prior/model")
    codes = prior.sample(64, seed=0, steps=128)       # (64, L) long in [0, V); never a mask

Model: a bidirectional transformer (token embedding with a mask token at index V, learned absolute
position embedding, optional rotary attention, adaLN-Zero on the noise level) predicting x0 at every
position. Objective: MDLM's continuous-time ELBO for the absorbing graph with SEDD's log-linear
schedule: a token is masked at time t with probability m(t) = (1 - eps) t, and the loss is

    E_{t ~ U(0,1)} [ 1/t * sum_{masked i} -log p(x0_i | x_t) ]          (nats per code; /L per token)

whose weight 1/t = m'(t) / m(t) is SEDD's dsigma/dt / expm1(sigma) with sigma(t) = -log(1 - m(t)).
For the absorbing graph, SEDD's score entropy with this parameterisation is the same ELBO.

Sampler: ancestral steps on a uniform time grid 1 -> 0 (for the absorbing graph this *is* SEDD's
Tweedie tau-leaping): each masked position unmasks with probability (m_t - m_s) / m_t and takes a
token drawn from p(x0 | x_t) at ``temperature``; the last step has m_s = 0, so nothing stays masked.
The paper's remasking corrector (after ReMDM): for t inside ``window`` each step is lengthened by
eta (1 - m_t) and every already-decoded token goes back to the mask with probability eta, which keeps
the expected masked fraction on schedule. Sample i depends only on (seed, i): all noise comes from
``dlc.seeding.SampleRNG`` with a fixed number of draws per step.

``SEDDPrior`` (``dlc.prior.sedd``) is the authors' released prior: SEDD's score network and its
analytic sampler, converted with ``dlc convert prior``; the pipeline holds either kind.

Training data (``data.codes``): a stored ``.npy`` (N, L) uint16, ``webdataset:PATTERN`` shards with
``code.npy``, or ``synthetic:NAME`` (see ``SYNTHETIC``; structured codes to develop with before an
encoder exists). Bits per token on held-out codes: the first ``data.holdout`` fraction of a fixed
permutation (seed 0) of the stored codes is never trained on; it is scored with the ELBO every
``train.sample_every`` steps and at the end (``data.eval_codes`` replaces it, and is needed for shards).
"""

from diffusers import ConfigMixin, ModelMixin  # noqa: F401  diffusers' pipeline loader looks up the base classes here

from .model import PRIOR_SIZES, CodePrior, create_prior, load_prior, mask_prob
from .sampling import sample_codes
from .sedd import SEDDPrior

__all__ = ["PRIOR_SIZES", "CodePrior", "SEDDPrior", "create_prior", "load_prior", "mask_prob", "sample_codes"]
