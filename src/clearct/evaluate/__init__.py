"""Evaluation: patient-level splits, metrics with bootstrap CIs, ROC/PR figures."""
