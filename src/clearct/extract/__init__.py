"""``clearct extract``: every slice (× window) of every scan through a frozen encoder → one ``<scan_id>.h5`` per
scan (:mod:`clearct.extract.run`). The feature-file contract is :mod:`clearct.io.features`; the embedding of one
scan is :func:`clearct.encoders.embed.embed_volume`."""
