"""Evaluation: scoring label maps against ground truth and checking trained backbones.

- :mod:`leopart.eval.score` — confusion matrices at the evaluation resolution, Hungarian and
  many-to-one matching, mIoU (used by every scoring stage).
- :mod:`leopart.eval.validate` — checks a trained backbone must pass before it is shipped
  (``python -m leopart.eval.validate``).
"""
