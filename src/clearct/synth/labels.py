"""The label columns clearct synth writes (Tasks 1–2 of the paper), importable without the renderer's packages."""

LOCATIONS = ("bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft_tissue", "pelvis")
LUNG_FINDINGS = ("emphysema", "effusion", "atelectasis", "fibrosis", "opacity", "calcification", "nodule")
