"""The end-to-end 3D baseline: a 3D CNN from MONAI or torchvision trained on whole volumes per task, with the
folds, early stopping and outputs of ``crossval`` (the ``finetune3d`` command: :mod:`clearct.finetune3d.run`)."""
