"""Evaluation, pure: patient-level splits, metrics with bootstrap CIs, ROC/PR figures, probes and localisation
scores, data-efficiency curve splits and figures. Nothing here trains a model of the pipeline."""
