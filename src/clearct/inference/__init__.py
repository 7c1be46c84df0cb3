"""Trained fold ensembles applied to data: ``deploy`` (an external cohort, either model family), ``predict`` (one
scan or a scans table, MIL) and ``attention`` (attention over every scan's slices, MIL)."""
