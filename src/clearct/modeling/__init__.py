"""What every supervised model family (:mod:`clearct.mil`, :mod:`clearct.finetune3d`) shares: task specs and their
losses, labels joined to scans, the cross-validation runner, and the model store."""
