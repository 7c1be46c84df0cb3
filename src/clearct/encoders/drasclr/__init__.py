"""DrasCLR's 3D patch encoder (Yu et al. 2023): location-conditioned convolutions, the patch grid inside a lung or
body mask, and the encoder's own ``embed_scan`` (one feature row per patch). Its training is
:mod:`clearct.pretrain.drasclr`."""
