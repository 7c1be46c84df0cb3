"""Workflows: sequences of the pipeline's stages with resume markers — ``clearct demo`` (:mod:`.demo`) and
``clearct benchmark`` (:mod:`.benchmark`). They call each stage's own command function with its config model and
hand what the stages wrote to :mod:`clearct.report`, which only renders."""
