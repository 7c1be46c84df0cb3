"""Attention-based MIL on frozen slice embeddings: models (a registry), bags, training and the ``crossval``
command. Fold ensembles are applied to new data by :mod:`clearct.inference`."""
