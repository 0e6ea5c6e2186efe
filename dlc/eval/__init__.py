"""Evaluation: image metrics (FID, sFID, KID, Inception Score, precision/recall, Vendi) in ``fidelity``
(the ADM evaluator's protocol against an ADM reference batch in ``adm``), and code quality (linear
probe, k-NN, code usage, sampled-code statistics) in ``codes``.

    metrics = dlc.eval.fid("out/sample/images", reference="emoji-32")   # {"fid": ..., "kid": ...}
"""

from .codes import code_statistics, evaluate_codes, knn_accuracy, linear_probe, usage_stats
from .fidelity import fid, image_features, vendi

__all__ = ["code_statistics", "evaluate_codes", "fid", "image_features", "knn_accuracy", "linear_probe",
           "usage_stats", "vendi"]
